"""Means and intervals of a results table: cells, convergence pairs and paired gains.

**Uncertainty respects the design.**  The runs of one (features, head, size)
are a folds x seeds grid; utterances within a held-out fold are not
independent, so resampling them would understate the uncertainty.  Intervals
come from a two-stage bootstrap: held-out folds drawn with replacement, then
seeds within each drawn fold.  The 95% interval of a mean is the bootstrap
standard error times Student's t quantile on (folds - 1) degrees of freedom,
which keeps its coverage with the 5 to 10 folds of real corpora, where plain
percentile intervals run narrow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from budget.metrics import result_classes
from budget.results import CURVE_KEYS, RESULT_KEY, curve_runs, sort_results
from budget.sampling import Size

BOOTSTRAP = 1000


def exact_mean(values) -> float:
    """The mean, correctly rounded (``math.fsum``): a cell's mean does not depend on the order its runs are summed in,
    which varies with how a table is grouped."""
    values = list(values)
    return math.fsum(values) / len(values)


def run_grid(runs: pd.DataFrame, value: str) -> np.ndarray:
    """Runs of one cell as a folds x seeds matrix (NaN where a run is missing)."""
    return runs.pivot_table(index="fold", columns="seed", values=value, aggfunc="mean").to_numpy(dtype=float)


def bootstrap_indices(n_folds: int, n_seeds: int, n_boot: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n_boot`` two-stage resamples of a folds x seeds grid: folds ``(n_boot, folds)``, then seeds within each
    ``(n_boot, folds, seeds)``; ``grid[folds[..., None], seeds]`` picks them."""
    return rng.integers(0, n_folds, (n_boot, n_folds)), rng.integers(0, n_seeds, (n_boot, n_folds, n_seeds))


def bootstrap_means(grid: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Means of ``n_boot`` two-stage resamples of a folds x seeds grid (folds, then seeds within)."""
    folds, seeds = bootstrap_indices(*grid.shape, n_boot, rng)
    picked = grid[folds[..., None], seeds]
    return np.nanmean(picked.reshape(n_boot, -1), axis=1)


#: Folds below which a report says its intervals are wide for want of folds (the t quantile on folds - 1 grows fast).
FEW_FOLDS = 5


def mean_interval(
    grid: np.ndarray, rng: np.random.Generator, n_boot: int = BOOTSTRAP, bounds: tuple[float, float] | None = None,
    level: float = 0.95,
) -> tuple[float, float, float]:
    """Mean, and the ``level`` (95%) interval from the bootstrap standard error with a t quantile on folds - 1.

    ``bounds``: the range the quantity cannot leave (an accuracy's [0, 1]); the
    interval is cut to it, which keeps its coverage of any value inside.
    """
    mean = float(np.nanmean(grid))
    n_folds = grid.shape[0]
    if n_folds < 2:
        return mean, float("nan"), float("nan")
    se = float(np.std(bootstrap_means(grid, n_boot, rng), ddof=1)) * math.sqrt(n_folds / (n_folds - 1))
    half = stats.t.ppf(1 - (1 - level) / 2, n_folds - 1) * se
    low, high = mean - half, mean + half
    if bounds is not None:
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return mean, low, high


def aggregate(results: pd.DataFrame, metric: str = "ua", seed: int = 0) -> pd.DataFrame:
    """Per (features, head, size): mean, std, 95% CI, training examples per class, runs."""
    rng = np.random.default_rng(seed)
    n_classes = len(result_classes(results)) or 1
    rows = []
    for (features, head, size), runs in results.groupby([*CURVE_KEYS, "size"], sort=False):
        mean, low, high = mean_interval(run_grid(runs, metric), rng, bounds=(0.0, 1.0))  # every metric is a rate
        rows.append(
            {
                "features": features,
                "head": head,
                "size": size,
                "n_per_class": float(runs["n_train"].mean()) / n_classes,
                "n_train": float(runs["n_train"].mean()),
                "mean": mean,
                "std": float(runs[metric].std(ddof=1)) if len(runs) > 1 else float("nan"),
                "ci_low": low,
                "ci_high": high,
                "folds": runs["fold"].nunique(),
                "runs": len(runs),
            }
        )
    return sort_results(pd.DataFrame(rows))


#: A cell whose mean UA moves by more than this with twice the training budget, and by more than two standard
#: errors of the paired change, is not converged.
CONVERGENCE_TOLERANCE = 0.01
#: The multiples of the study's budget a cell the convergence check flags is trained at, in turn; the last is the cap.
BUDGETS = (1, 2, 4, 8)


def budget_ladder(results: pd.DataFrame, convergence: pd.DataFrame) -> pd.DataFrame:
    """Every run of the cells the convergence check trained on, at each budget it trained them at (``budget``: the
    multiple of the study's budget).  A run folder from before budgets were recorded holds the check's runs at twice
    the budget and the cells' own in ``results``."""
    if convergence.empty:
        return convergence
    if "budget" in convergence:
        return convergence
    cells = convergence[["features", "head", "size"]].drop_duplicates()
    first = results.merge(cells, on=["features", "head", "size"]).assign(budget=1)
    return pd.concat([first, convergence.assign(budget=2)], ignore_index=True)


def convergence_table(results: pd.DataFrame, convergence: pd.DataFrame) -> pd.DataFrame:
    """Per checked cell and doubling of its budget (``budget`` to twice it): mean UA at each, on the same runs.

    ``change_points`` is the move in UA points and ``change_se_points`` its
    standard error over held-out folds (each run paired with itself at the higher budget).
    ``flagged`` marks a cell still learning: a move of more than
    :data:`CONVERGENCE_TOLERANCE` (1 point) that is also more than two standard
    errors, so a stochastic head's seed noise is not taken for learning.
    """
    columns = ["features", "head", "size", "budget", "ua_default", "ua_doubled", "change_points", "change_se_points",
               "runs", "flagged"]  # fmt: skip
    ladder = budget_ladder(results, convergence)
    if ladder.empty:
        return pd.DataFrame(columns=columns)
    key = RESULT_KEY
    tables = []
    for budget in sorted(set(ladder["budget"])):
        lower, upper = ladder[ladder["budget"] == budget], ladder[ladder["budget"] == 2 * budget]
        if upper.empty:
            continue
        paired = upper[[*key, "ua"]].merge(lower[[*key, "ua"]], on=key, suffixes=("_doubled", "_default"))
        table = paired.groupby(["features", "head", "size"], sort=False).agg(
            ua_default=("ua_default", "mean"), ua_doubled=("ua_doubled", "mean"), runs=("ua_default", "size")
        )
        folds = (paired["ua_doubled"] - paired["ua_default"]).groupby([paired[k] for k in key[:4]], sort=False).mean()
        spread = folds.groupby(level=[0, 1, 2], sort=False).agg(["std", "size"])
        table["change_se_points"] = 100 * (spread["std"] / np.sqrt(spread["size"])).where(spread["size"] > 1, 0.0)
        tables.append(table.reset_index().assign(budget=budget))
    if not tables:
        return pd.DataFrame(columns=columns)
    table = sort_results(pd.concat(tables, ignore_index=True))  # stable: each cell's doublings stay in budget order
    table["change_points"] = 100 * (table["ua_doubled"] - table["ua_default"])
    moved = (table["ua_doubled"] - table["ua_default"]).abs()
    table["flagged"] = (moved > CONVERGENCE_TOLERANCE) & (100 * moved > 2 * table["change_se_points"])
    return table[columns].reset_index(drop=True)


def cell_budgets(table: pd.DataFrame) -> pd.DataFrame:
    """Per checked cell (from :func:`convergence_table`): the first budget whose doubling no longer moves it
    (``budget``), or, where every doubling tried moved it, the largest tried with ``converged`` False."""
    rows = []
    for (features, head, size), steps in table.groupby(["features", "head", "size"], sort=False):
        steps = steps.sort_values("budget")
        settled = steps[~steps["flagged"]]
        budget = int(settled["budget"].iloc[0]) if len(settled) else 2 * int(steps["budget"].max())
        rows.append({"features": features, "head": head, "size": size, "budget": budget, "converged": bool(len(settled))})
    return pd.DataFrame(rows, columns=["features", "head", "size", "budget", "converged"])


#: A configuration: (features, head).
Configuration = tuple[str, str]


@dataclass(frozen=True)
class PairedDifference:
    """One configuration's UA minus another's over the runs both hold at one size (same held-out fold, same seed,
    so the same training subset): the mean in points, its 95% interval, and how often the first came out ahead."""

    first: Configuration
    second: Configuration
    size: Size
    points: float
    low: float
    high: float
    wins: int  # runs where the first's UA is higher
    ties: int
    runs: int

    @property
    def distinguishable(self) -> bool:
        """Whether the interval excludes zero (an interval that cannot be computed distinguishes nothing)."""
        return bool(self.low > 0 or self.high < 0)

    def describe(self) -> str:
        """``+0.6 points (95% CI -1.2 to +2.4), higher in 17 of 30 paired runs``."""
        ties = f", {self.ties} tied" if self.ties else ""
        interval = f"95% CI {self.low:+.1f} to {self.high:+.1f}" if math.isfinite(self.low) else "no interval: one fold"
        return f"{self.points:+.1f} points ({interval}), higher in {self.wins} of {self.runs} paired runs{ties}"


def paired_difference(results: pd.DataFrame, first: Configuration, second: Configuration, size: Size,
                      rng: np.random.Generator | None = None) -> PairedDifference | None:  # fmt: skip
    """``first``'s UA minus ``second``'s at ``size``, paired by (fold, seed); None when they share no run.

    Every run of a study at one (fold, seed, size) trains on the same subset
    whatever its features and head, so the difference of two configurations
    is measured run by run: fold effects both share cancel, and the interval
    (the fold-then-seed bootstrap of :func:`mean_interval`) is the
    difference's own, narrower than two separate intervals suggest.
    """
    rng = rng or np.random.default_rng(0)

    def cell(configuration: Configuration) -> pd.Series:
        return curve_runs(results, *configuration, size=size).set_index(["fold", "seed"])["ua"]

    paired = (cell(first) - cell(second)).dropna()
    if paired.empty:
        return None
    mean, low, high = mean_interval(100 * run_grid(paired.rename("gain").reset_index(), "gain"), rng)
    return PairedDifference(first, second, size, mean, low, high, int((paired > 0).sum()), int((paired == 0).sum()),
                            len(paired))  # fmt: skip


def feature_gains(results: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Per (head, size) and feature set after the first: its UA minus the first set's, in points, paired
    (:func:`paired_difference`), with the runs it came out ahead in."""
    rng = np.random.default_rng(seed)
    feature_sets = list(dict.fromkeys(results["features"]))
    columns = ["head", "size", "features", "baseline", "gain_points", "ci_low", "ci_high", "wins", "runs"]
    rows = []
    for (head, size), runs in results.groupby(["head", "size"], sort=False):
        for features in feature_sets[1:]:
            gain = paired_difference(runs, (features, head), (feature_sets[0], head), size, rng)
            if gain is not None:
                rows.append(dict(zip(columns, [head, size, features, feature_sets[0], gain.points, gain.low, gain.high,
                                               gain.wins, gain.runs], strict=True)))  # fmt: skip
    return pd.DataFrame(rows, columns=columns)
