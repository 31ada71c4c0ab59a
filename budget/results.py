"""The results table: one row per run, the key that names it, the order rows are shown in, and its stored form.

A results table has one row per (features, head, size, fold, seed):
:data:`RESULT_KEY`.  In memory ``size`` holds :class:`budget.sampling.Size`
values; on disk (parquet and CSV) it is stored typed, as an integer column
``per_class`` (empty for ``full``) beside a boolean ``full``.  :func:`stored` and
:func:`read_stored` convert between the two, and the reader also opens tables
written before, whose ``size`` was text (``"125"`` or ``"full"``).
:func:`curve_runs` answers "these rows of this curve".
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

from budget.sampling import FULL, Size

RESULT_KEY = ["features", "head", "size", "fold", "seed"]
#: An acquisition study's rows: one per (features, head, strategy, size in clips, fold, seed).
ACQUISITION_KEY = ["features", "head", "strategy", "size", "fold", "seed"]
#: A learning curve: one feature set and one head.
CURVE_KEYS = ["features", "head"]


def stored(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` as it is written: ``size`` becomes ``per_class`` (nullable integer) and ``full`` (boolean)."""
    if "size" not in table:
        return table
    at = table.columns.get_loc("size")
    per_class = pd.array([size.per_class for size in table["size"]], dtype="Int64")
    written = table.drop(columns="size")
    written.insert(at, "full", [size.full for size in table["size"]])
    written.insert(at, "per_class", per_class)
    return written


def read_stored(table: pd.DataFrame) -> pd.DataFrame:
    """A table as :func:`stored` wrote it (or as earlier versions did, with ``size`` as text), with ``size`` as
    :class:`~budget.sampling.Size` values: the one place a stored size is decoded."""
    if "per_class" in table and "full" in table:
        at = table.columns.get_loc("per_class")
        sizes = [FULL if full else Size(int(count)) for count, full in zip(table["per_class"], table["full"], strict=True)]
        read = table.drop(columns=["per_class", "full"])
    elif "size" in table:  # written before sizes were typed
        at = table.columns.get_loc("size")
        sizes = [FULL if str(text) == "full" else Size(int(text)) for text in table["size"]]
        read = table.drop(columns="size")
    else:
        return table
    read.insert(at, "size", pd.Series(sizes, index=table.index, dtype=object))
    return read


def curve_runs(table: pd.DataFrame, features: str, head: str, balanced: bool = False, size: Size | None = None
               ) -> pd.DataFrame:  # fmt: skip
    """The rows of one curve (``features`` + ``head``): all of them, its balanced sizes only, or one size's."""
    rows = (table["features"] == features) & (table["head"] == head)
    if balanced:
        rows &= balanced_rows(table)
    if size is not None:
        rows &= table["size"] == size
    return table[rows]


def balanced_rows(table: pd.DataFrame) -> pd.Series:
    """Which rows are at a class-balanced size (not ``full``)."""
    return pd.Series([size.balanced for size in table["size"]], index=table.index, dtype=bool)


def sort_results(table: pd.DataFrame, order: dict[str, list[str]] | None = None) -> pd.DataFrame:
    """Rows by features and head (and strategy, in an acquisition table), as listed in ``order``, else in order of
    first appearance, then sizes ascending with ``full`` last, then fold and seed where the table has them."""
    order = order or {}
    keys = pd.DataFrame(index=table.index)
    for key in [*CURVE_KEYS, *(["strategy"] if "strategy" in table else [])]:
        names = order.get(key) or list(pd.unique(table[key]))
        keys[key] = table[key].map({name: i for i, name in enumerate(names)})
    keys["size"] = [size.value for size in table["size"]]
    for key in ("fold", "seed"):
        if key in table:
            keys[key] = table[key]
    return table.loc[keys.sort_values(list(keys.columns), kind="stable").index].reset_index(drop=True)


@dataclass(frozen=True)
class Checkpoint:
    """A stepped run's weights after ``cycles`` cycles of its schedule (:meth:`budget.engine.config.TrainConfig.scaled`),
    by parameter name, without the ensemble's member axis: where the run at a higher budget goes on from."""

    cycles: int
    parameters: dict[str, np.ndarray]


@dataclass
class RunOutput:
    """A trained run: its predictions on the test positions; for a head that weighed an encoder's layers (a
    ``:weighted`` feature set), the weights it learned; and, where asked for (an acquisition strategy reads them),
    its class probabilities on the test positions ``(positions, classes)``; a stepped run's weights as it ended.
    Trainers may return bare predictions instead."""

    predictions: np.ndarray
    layer_weights: np.ndarray | None = None
    probabilities: np.ndarray | None = None
    checkpoint: Checkpoint | None = None  # a stepped run's final weights, for the convergence check's next rung

    @classmethod
    def of(cls, output: RunOutput | np.ndarray) -> RunOutput:
        return output if isinstance(output, RunOutput) else cls(np.asarray(output))

    @classmethod
    def packed(cls, predictions: np.ndarray, logits=None, layer_weights: np.ndarray | None = None,
               checkpoint: Checkpoint | None = None):  # fmt: skip
        """What a trainer returns: bare predictions, or a :class:`RunOutput` when it has layer weights or a checkpoint
        or was asked for probabilities (``logits`` given: a tensor or array ``(positions, classes)``, softmaxed here)."""
        if logits is None and layer_weights is None and checkpoint is None:
            return predictions
        probabilities = None
        if logits is not None:
            import torch

            probabilities = torch.softmax(torch.as_tensor(logits).float(), -1).cpu().numpy()
        return cls(predictions, layer_weights, probabilities, checkpoint)

    def columns(self) -> dict[str, str]:
        """What the run adds to its result row: ``layer_weights``, a JSON list, when it learned them."""
        if self.layer_weights is None:
            return {}
        return {"layer_weights": json.dumps([round(float(w), 5) for w in self.layer_weights])}


def layer_weights(results: pd.DataFrame) -> pd.DataFrame:
    """Runs that learned layer weights, one column per layer (``layer0`` ...), beside their key."""
    if "layer_weights" not in results:
        return pd.DataFrame(columns=RESULT_KEY)
    learned = results[results["layer_weights"].notna()]
    weights = np.array([json.loads(w) for w in learned["layer_weights"]]) if len(learned) else np.zeros((0, 0))
    columns = pd.DataFrame(weights, columns=[f"layer{i}" for i in range(weights.shape[1])], index=learned.index)
    return pd.concat([learned[RESULT_KEY], columns], axis=1).reset_index(drop=True)
