"""Class-balanced training subsets, drawn from the training folds only.

A budget curve trains on ``k`` examples per class for growing ``k``.  For
each (fold, seed), every class's training utterances are shuffled once (from a
seed sequence of both) and the
subset of size ``k`` takes the first ``k`` of each class, so subsets are
nested (the 250 set contains the 125 set) and a curve is not jagged from
resampling.  ``full`` is every training utterance, unbalanced.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from budget.errors import BudgetError
from budget.folds import training_counts

FULL = "full"
#: The paper's schedule: 125 per class, doubling.
PAPER_START = 125


def size_value(size: int | str) -> float:
    """A size (``125``, ``"125"`` or ``"full"``) as examples per class: ``full`` is infinite, so it sorts last."""
    return math.inf if str(size) == FULL else float(size)


def is_balanced(sizes: pd.Series) -> pd.Series:
    """Which of a results table's sizes are class-balanced (a number per class), not ``full``."""
    return sizes.astype(str) != FULL


def size_phrase(size: int | str, unit: str = "examples per class") -> str:
    """A size for a reader: ``125 examples per class``, or ``all training data``."""
    return "all training data" if str(size) == FULL else f"{size} {unit}"


def curve_ends(sizes) -> set:
    """The sizes most at risk of a budget too small, which the default convergence check retrains.

    The smallest and largest balanced size (the fit's ends) and ``full``, when
    measured: under a fixed step budget the most training data is the first
    to be under-trained.
    """
    balanced = sorted((s for s in sizes if str(s) != FULL), key=size_value)
    return {*(balanced[:1] + balanced[-1:]), *(s for s in sizes if str(s) == FULL)}


@dataclass(frozen=True)
class SizePlan:
    """The per-class sizes a study runs, and those it had to skip (with why)."""

    sizes: list[int | str]  # ints per class, and possibly "full"
    skipped: list[str]
    note: str = ""


def read_sizes(given) -> tuple[int | str, ...]:
    """Sizes as written (``"5,10,full"``, ``[5, "10"]`` or ``125``) to positive whole numbers and ``full``, once.

    Repeated sizes are kept once; an empty or malformed size is an error.
    """
    parts = given.split(",") if isinstance(given, str) else list(given) if isinstance(given, list | tuple) else [given]
    sizes: list[int | str] = []
    for part in (str(p).strip().lower() for p in parts):
        if not part:
            continue
        if part == FULL:
            sizes.append(FULL)
            continue
        try:
            value = int(part)
        except ValueError:
            raise BudgetError(f"bad size {part!r}: use whole numbers or 'full'") from None
        if value <= 0:
            raise BudgetError(f"sizes must be positive; got {value}")
        sizes.append(value)
    if not sizes:
        raise BudgetError("no sizes given")
    return tuple(dict.fromkeys(sizes))


def parse_sizes(per_class, n_total, n_classes: int) -> list[int | str] | None:
    """Per-class sizes from ``per_class`` or from totals ``n_total`` (each read by :func:`read_sizes`).

    A total is divided by the number of classes (``--n 500`` is 125 per class
    for 4 classes) and must divide evenly.
    """
    if per_class and n_total:
        raise BudgetError("give sizes per class (--per-class) or in total (--n), not both")
    if not (per_class or n_total):
        return None
    if not n_total:
        return list(read_sizes(per_class))
    sizes: list[int | str] = []
    for value in read_sizes(n_total):
        if value == FULL:
            raise BudgetError("--n takes totals; ask for all training data with --per-class full")
        if value % n_classes:
            raise BudgetError(
                f"--n {value} does not divide into {n_classes} equal classes; use a multiple of {n_classes} "
                f"or --per-class"
            )
        sizes.append(value // n_classes)
    return list(dict.fromkeys(sizes))


@dataclass(frozen=True)
class Ceiling:
    """The largest class-balanced training size per class every fold can supply, and what limits it."""

    per_class: int
    fold: int  # the held-out fold that leaves the fewest training examples
    label: str  # of this class
    counts: pd.DataFrame  # training examples per fold (rows) and class (columns)


def corpus_ceiling(manifest: pd.DataFrame, folds: pd.Series) -> Ceiling:
    """The ceiling of a budget curve on this corpus and these folds (see :func:`budget.folds.training_counts`)."""
    counts = training_counts(manifest, folds)
    fold, label = counts.stack().idxmin()
    return Ceiling(int(counts.to_numpy().min()), int(fold), str(label), counts)


def plan_sizes(requested: list[int | str] | None, manifest: pd.DataFrame, folds: pd.Series) -> SizePlan:
    """Check requested sizes against what every fold can supply; default to the paper's schedule.

    A requested size that some fold cannot supply is skipped and reported,
    never shrunk.  Without a request, sizes double from 125 per class up to
    what every fold can supply, plus ``full``; a corpus too small for 125 per
    class gets four doubling sizes ending at its ceiling instead.
    """
    limit = corpus_ceiling(manifest, folds)
    ceiling = limit.per_class
    if ceiling == 0:
        raise BudgetError(
            f"class {limit.label!r} has no training example when fold {limit.fold} is held out (all its utterances are in that "
            f"fold's groups), so no class-balanced subset can be drawn; drop or merge it with --classes"
        )
    if requested is None:
        if ceiling >= PAPER_START:
            sizes: list[int | str] = [PAPER_START * 2**i for i in range(int(np.log2(ceiling / PAPER_START)) + 1)]
            note = f"sizes double from {PAPER_START} per class up to {sizes[-1]} (every fold supplies {ceiling})"
        else:
            sizes = sorted({max(1, round(ceiling / 2**i)) for i in range(3, -1, -1)})
            note = f"this corpus supplies at most {ceiling} per class in every fold, below the paper's {PAPER_START}; sizes {sizes}"
        return SizePlan([*sizes, FULL], [], note)
    sizes, skipped = [], []
    for size in requested:
        if size == FULL or size <= ceiling:
            sizes.append(size)
            continue
        skipped.append(
            f"{size} per class: when fold {limit.fold} is held out, class {limit.label!r} has only {ceiling} "
            f"training examples (largest size every fold supplies: {ceiling})"
        )
    return SizePlan(sizes, skipped)


def class_orders(train_labels: np.ndarray, seed: int, fold: int) -> dict[object, np.ndarray]:
    """Per class, the positions (into ``train_labels``) in the (fold, seed)'s shuffled order.

    The shuffle is seeded by both: on a corpus whose folds share one label
    sequence (every actor records the same script), folds still draw
    independent subsets for the same seed.
    """
    rng = np.random.default_rng(np.random.SeedSequence([fold, seed]))
    return {label: rng.permutation(np.flatnonzero(train_labels == label)) for label in np.unique(train_labels)}


def balanced_subset(train_labels: np.ndarray, size: int | str, seed: int, fold: int = 0) -> np.ndarray:
    """Positions of a class-balanced subset of ``size`` per class (or all, for ``full``), sorted.

    Subsets of one (fold, seed) are nested across sizes.  Raises when a class
    has fewer than ``size`` examples: a size is never silently shrunk.
    """
    if size == FULL:
        return np.arange(len(train_labels))
    orders = class_orders(train_labels, seed, fold)
    short = {label: len(order) for label, order in orders.items() if len(order) < size}
    if short:
        detail = ", ".join(f"'{label}' has {n}" for label, n in short.items())
        raise BudgetError(f"cannot draw {size} per class: {detail}")
    return np.sort(np.concatenate([order[:size] for order in orders.values()]))
