"""The grid of a study: its runs, built from the data and the settings alone (no I/O)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from budget.sampling import size_value


@dataclass(frozen=True)
class Run:
    """One training run: positions into the feature set's rows."""

    fold: int
    seed: int
    size: int | str
    train: np.ndarray
    test: np.ndarray

    def seed_sequence(self) -> np.random.SeedSequence:
        size = size_value(self.size)  # full seeds as 0, k per class as k + 1
        return np.random.SeedSequence([self.seed, self.fold, 0 if math.isinf(size) else int(size) + 1])

