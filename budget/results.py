"""The results table: one row per run, the key that names it, and the order rows are shown in.

A results table has one row per (features, head, size, fold, seed):
:data:`RESULT_KEY`.  ``size`` holds the size as written (``"125"`` or
``"full"``); :func:`budget.sampling.size_value` turns it into a number.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

from budget.sampling import size_value

RESULT_KEY = ["features", "head", "size", "fold", "seed"]
#: A learning curve: one feature set and one head.
CURVE_KEYS = ["features", "head"]


def sort_results(table: pd.DataFrame, order: dict[str, list[str]] | None = None) -> pd.DataFrame:
    """Rows by features and head (as listed in ``order``, else in order of first appearance), then sizes
    ascending with ``full`` last, then fold and seed where the table has them."""
    order = order or {}
    keys = pd.DataFrame(index=table.index)
    for key in CURVE_KEYS:
        names = order.get(key) or list(pd.unique(table[key]))
        keys[key] = table[key].map({name: i for i, name in enumerate(names)})
    keys["size"] = table["size"].map(size_value)
    for key in ("fold", "seed"):
        if key in table:
            keys[key] = table[key]
    return table.loc[keys.sort_values(list(keys.columns), kind="stable").index].reset_index(drop=True)


@dataclass
class RunOutput:
    """A trained run: its predictions on the test positions and, for a head that weighed an encoder's layers
    (a ``:weighted`` feature set), the weights it learned.  Trainers may return bare predictions instead."""

    predictions: np.ndarray
    layer_weights: np.ndarray | None = None

    @classmethod
    def of(cls, output: RunOutput | np.ndarray) -> RunOutput:
        return output if isinstance(output, RunOutput) else cls(np.asarray(output))

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
