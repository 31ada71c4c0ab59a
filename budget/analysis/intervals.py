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

import numpy as np
import pandas as pd
from scipy import stats

from budget.metrics import result_classes
from budget.results import CURVE_KEYS, RESULT_KEY, sort_results

BOOTSTRAP = 1000


def run_grid(runs: pd.DataFrame, value: str) -> np.ndarray:
    """Runs of one cell as a folds x seeds matrix (NaN where a run is missing)."""
    return runs.pivot_table(index="fold", columns="seed", values=value, aggfunc="mean").to_numpy(dtype=float)


def bootstrap_means(grid: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Means of ``n_boot`` two-stage resamples of a folds x seeds grid (folds, then seeds within)."""
    n_folds, n_seeds = grid.shape
    folds = rng.integers(0, n_folds, (n_boot, n_folds))
    seeds = rng.integers(0, n_seeds, (n_boot, n_folds, n_seeds))
    picked = grid[folds[..., None], seeds]
    return np.nanmean(picked.reshape(n_boot, -1), axis=1)


#: Folds below which a report says its intervals are wide for want of folds (the t quantile on folds - 1 grows fast).
FEW_FOLDS = 5


def mean_interval(
    grid: np.ndarray, rng: np.random.Generator, n_boot: int = BOOTSTRAP, bounds: tuple[float, float] | None = None
) -> tuple[float, float, float]:
    """Mean, and the 95% interval from the bootstrap standard error with a t quantile on folds - 1.

    ``bounds``: the range the quantity cannot leave (an accuracy's [0, 1]); the
    interval is cut to it, which keeps its coverage of any value inside.
    """
    mean = float(np.nanmean(grid))
    n_folds = grid.shape[0]
    if n_folds < 2:
        return mean, float("nan"), float("nan")
    se = float(np.std(bootstrap_means(grid, n_boot, rng), ddof=1)) * math.sqrt(n_folds / (n_folds - 1))
    half = stats.t.ppf(0.975, n_folds - 1) * se
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


#: A cell whose mean UA moves by more than this with twice the training budget is not converged.
CONVERGENCE_TOLERANCE = 0.01


def convergence_table(results: pd.DataFrame, doubled: pd.DataFrame) -> pd.DataFrame:
    """Per cell the convergence check retrained: mean UA at the study's budget and at twice it, on the same runs.

    ``change_points`` is the move in UA points and ``change_se_points`` its
    standard error over held-out folds (each run paired with its retraining):
    a stochastic head's move within about two of it may be seed noise, which
    more seeds tell apart from learning.  ``flagged`` marks a move of more than
    :data:`CONVERGENCE_TOLERANCE` (1 point): that cell is not converged.
    """
    columns = ["features", "head", "size", "ua_default", "ua_doubled", "change_points", "change_se_points", "runs", "flagged"]
    if doubled.empty:
        return pd.DataFrame(columns=columns)
    key = RESULT_KEY
    paired = doubled[[*key, "ua"]].merge(results[[*key, "ua"]], on=key, suffixes=("_doubled", "_default"))
    table = paired.groupby(["features", "head", "size"], sort=False).agg(
        ua_default=("ua_default", "mean"), ua_doubled=("ua_doubled", "mean"), runs=("ua_default", "size")
    )
    folds = (paired["ua_doubled"] - paired["ua_default"]).groupby([paired[k] for k in key[:4]], sort=False).mean()
    spread = folds.groupby(level=[0, 1, 2], sort=False).agg(["std", "size"])
    table["change_se_points"] = 100 * (spread["std"] / np.sqrt(spread["size"])).where(spread["size"] > 1, 0.0)
    table = sort_results(table.reset_index())
    table["change_points"] = 100 * (table["ua_doubled"] - table["ua_default"])
    table["flagged"] = (table["ua_doubled"] - table["ua_default"]).abs() > CONVERGENCE_TOLERANCE
    return table[columns]


def feature_gains(results: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Per (head, size) and feature set after the first: its UA minus the first set's, in points.

    Paired by (fold, seed): both sets were tested on the same held-out fold with
    the same subset draw, so the interval (bootstrap over folds, then seeds) is of
    the difference itself, narrower than two independent intervals would suggest.
    """
    rng = np.random.default_rng(seed)
    feature_sets = list(dict.fromkeys(results["features"]))
    rows = []
    for (head, size), runs in results.groupby(["head", "size"], sort=False):
        base = runs[runs["features"] == feature_sets[0]].set_index(["fold", "seed"])["ua"]
        for features in feature_sets[1:]:
            other = runs[runs["features"] == features].set_index(["fold", "seed"])["ua"]
            paired = (other - base).dropna()
            if paired.empty:
                continue
            grid = run_grid(paired.rename("gain").reset_index(), "gain")
            mean, low, high = mean_interval(100 * grid, rng)
            rows.append({"head": head, "size": size, "features": features, "baseline": feature_sets[0],
                         "gain_points": mean, "ci_low": low, "ci_high": high, "runs": len(paired)})  # fmt: skip
    return pd.DataFrame(rows, columns=["head", "size", "features", "baseline", "gain_points", "ci_low", "ci_high", "runs"])
