"""Training-set sizes and the class-balanced subsets they draw, from the training folds only.

A budget curve trains on ``k`` examples per class for growing ``k``.  For
each (fold, seed), every class's training utterances are shuffled once (from a
seed sequence of both) and the
subset of size ``k`` takes the first ``k`` of each class, so subsets are
nested (the 250 set contains the 125 set) and a curve is not jagged from
resampling.  ``full`` is every training utterance, unbalanced.

A size is a :class:`Size`, parsed once where it is typed (:func:`read_sizes`)
or read from a results table (:mod:`budget.results`), and compared, sorted and
shown as a value everywhere else.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from budget.errors import BudgetError
from budget.folds import training_counts

#: The paper's schedule: 125 per class, doubling.
PAPER_START = 125


@dataclass(frozen=True, eq=False)
class Size:
    """A training-set size: ``per_class`` examples of each class (a balanced subset), or, with ``per_class`` None,
    every training utterance (``full``, unbalanced).

    Sizes sort by examples per class with ``full`` last, print as ``125`` or
    ``full``, and equal the integer of their per-class count (``size == 125``),
    so a results table can be filtered as a person would write it.
    """

    per_class: int | None = None

    def __post_init__(self):
        if self.per_class is not None and (isinstance(self.per_class, bool) or not isinstance(self.per_class, int | np.integer)
                                           or self.per_class < 1):  # fmt: skip
            raise BudgetError(f"a size is a positive whole number of examples per class; got {self.per_class!r}")
        if self.per_class is not None:
            object.__setattr__(self, "per_class", int(self.per_class))

    @classmethod
    def of(cls, value: Size | int) -> Size:
        """A size from a size or a count per class (no text: that is :func:`read_sizes`' to parse)."""
        return value if isinstance(value, Size) else cls(value)

    @property
    def full(self) -> bool:
        return self.per_class is None

    @property
    def balanced(self) -> bool:
        return self.per_class is not None

    @property
    def value(self) -> float:
        """Examples per class as a number: infinite for ``full``, which sorts last."""
        return math.inf if self.per_class is None else float(self.per_class)

    def phrase(self, unit: str = "examples per class") -> str:
        """For a reader: ``125 examples per class``, or ``all training data``."""
        return "all training data" if self.full else f"{self.per_class} {unit}"

    def to_json(self) -> int | str:
        """The size as configs and JSON hold it: its count, or ``"full"``."""
        return "full" if self.full else self.per_class

    def __str__(self) -> str:
        return str(self.to_json())

    __repr__ = __str__

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)

    def __eq__(self, other) -> bool:
        if isinstance(other, Size):
            return self.per_class == other.per_class
        if isinstance(other, int | np.integer) and not isinstance(other, bool):
            return self.per_class == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.per_class) if self.per_class is not None else hash("full")

    def __lt__(self, other: Size) -> bool:
        return self.value < Size.of(other).value

    def __le__(self, other: Size) -> bool:
        return self.value <= Size.of(other).value

    def __gt__(self, other: Size) -> bool:
        return self.value > Size.of(other).value

    def __ge__(self, other: Size) -> bool:
        return self.value >= Size.of(other).value


FULL = Size()


def curve_ends(sizes) -> set[Size]:
    """The sizes most at risk of a budget too small, which the default convergence check retrains.

    The smallest and largest balanced size (the fit's ends) and ``full``, when
    measured: under a fixed step budget the most training data is the first
    to be under-trained.
    """
    balanced = sorted(size for size in sizes if size.balanced)
    return {*(balanced[:1] + balanced[-1:]), *(size for size in sizes if size.full)}


@dataclass(frozen=True)
class SizePlan:
    """The sizes a study runs, and those it had to skip (with why)."""

    sizes: list[Size]
    skipped: list[str]
    note: str = ""


def read_sizes(given) -> tuple[Size, ...]:
    """Sizes as written (``"5,10,full"``, ``[5, "10"]``, ``125`` or sizes) to :class:`Size` values, once.

    Repeated sizes are kept once; an empty or malformed size is an error.
    """
    parts = given.split(",") if isinstance(given, str) else list(given) if isinstance(given, list | tuple) else [given]
    sizes: list[Size] = []
    for part in parts:
        if isinstance(part, Size):
            sizes.append(part)
            continue
        text = str(part).strip().lower()
        if not text:
            continue
        if text == "full":
            sizes.append(FULL)
            continue
        try:
            value = int(text)
        except ValueError:
            raise BudgetError(f"bad size {text!r}: use whole numbers or 'full'") from None
        if value <= 0:
            raise BudgetError(f"sizes must be positive; got {value}")
        sizes.append(Size(value))
    if not sizes:
        raise BudgetError("no sizes given")
    return tuple(dict.fromkeys(sizes))


def read_totals(given) -> tuple[int, ...]:
    """Training-set sizes in total (``--n 500,1000``), read as :func:`read_sizes` reads sizes; ``full`` is refused."""
    totals = read_sizes(given)
    if FULL in totals:
        raise BudgetError("--n takes totals; ask for all training data with --per-class full")
    return tuple(size.per_class for size in totals)


def per_class_sizes(per_class: tuple[Size, ...] | None, totals: tuple[int, ...] | None, n_classes: int) -> list[Size] | None:
    """The sizes a study asks for: ``per_class`` as given, or ``totals`` divided by the number of classes (``--n 500``
    is 125 per class for 4 classes), which must divide evenly.
    """
    if per_class and totals:
        raise BudgetError("give sizes per class (--per-class) or in total (--n), not both")
    if not (per_class or totals):
        return None
    if not totals:
        return list(per_class)
    sizes: list[Size] = []
    for total in totals:
        if total % n_classes:
            raise BudgetError(
                f"--n {total} does not divide into {n_classes} equal classes; use a multiple of {n_classes} "
                f"or --per-class"
            )
        sizes.append(Size(total // n_classes))
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


def plan_sizes(requested: list[Size] | None, manifest: pd.DataFrame, folds: pd.Series) -> SizePlan:
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
            counts = [PAPER_START * 2**i for i in range(int(np.log2(ceiling / PAPER_START)) + 1)]
            note = f"sizes double from {PAPER_START} per class up to {counts[-1]} (every fold supplies {ceiling})"
        else:
            counts = sorted({max(1, round(ceiling / 2**i)) for i in range(3, -1, -1)})
            note = f"this corpus supplies at most {ceiling} per class in every fold, below the paper's {PAPER_START}; sizes {counts}"
        return SizePlan([*map(Size, counts), FULL], [], note)
    sizes, skipped = [], []
    for size in requested:
        if size.full or size.per_class <= ceiling:
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


def balanced_subset(train_labels: np.ndarray, size: Size | int, seed: int, fold: int = 0) -> np.ndarray:
    """Positions of a class-balanced subset of ``size`` per class (or all, for ``full``), sorted.

    Subsets of one (fold, seed) are nested across sizes.  Raises when a class
    has fewer than ``size`` examples: a size is never silently shrunk.
    """
    size = Size.of(size)
    if size.full:
        return np.arange(len(train_labels))
    orders = class_orders(train_labels, seed, fold)
    short = {label: len(order) for label, order in orders.items() if len(order) < size.per_class}
    if short:
        detail = ", ".join(f"'{label}' has {n}" for label, n in short.items())
        raise BudgetError(f"cannot draw {size} per class: {detail}")
    return np.sort(np.concatenate([order[: size.per_class] for order in orders.values()]))
