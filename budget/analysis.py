"""From a results table to curves, fitted laws, extrapolations and label budgets.

**Uncertainty respects the design.**  The runs of one (features, head, size)
are a folds x seeds grid; utterances within a held-out fold are not
independent, so resampling them would understate the uncertainty.  Intervals
come from a two-stage bootstrap: held-out folds drawn with replacement, then
seeds within each drawn fold.  The 95% interval of a mean is the bootstrap
standard error times Student's t quantile on (folds - 1) degrees of freedom,
which keeps its coverage with the 5 to 10 folds of real corpora, where plain
percentile intervals run narrow.

**Learning curves.**  Two laws are fitted to mean UA against training
examples per class ``n``:

* the inverse power law ``UA = a - b * n**(-c)`` (a ceiling ``a``), by weighted
  nonlinear least squares with weights growing with ``n`` (the i-th smallest of
  m sizes weighs i/m, after Figueroa et al. 2012), and
* the logarithmic law ``UA = alpha + beta * ln n`` the paper reports.

Each is scored on the fitted points (RMSE, R^2) and by a held-out check: fit
on all but the largest size, predict the largest.  The law with the smaller
held-out error is used for extrapolation; with too few sizes for the check,
the logarithmic law (two parameters) is used.  Extrapolations carry 95%
prediction intervals from refitting on bootstrap resamples of the runs.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats
from scipy.optimize import OptimizeWarning, curve_fit

from budget.errors import BudgetError

BOOTSTRAP = 1000
CURVE_KEYS = ["features", "head"]
POWER = "power"
LOG = "log"


# -- aggregation -----------------------------------------------------------------------------


def _grid(runs: pd.DataFrame, value: str) -> np.ndarray:
    """Runs of one cell as a folds x seeds matrix (NaN where a run is missing)."""
    return runs.pivot_table(index="fold", columns="seed", values=value, aggfunc="mean").to_numpy(dtype=float)


def bootstrap_means(grid: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Means of ``n_boot`` two-stage resamples of a folds x seeds grid (folds, then seeds within)."""
    n_folds, n_seeds = grid.shape
    folds = rng.integers(0, n_folds, (n_boot, n_folds))
    seeds = rng.integers(0, n_seeds, (n_boot, n_folds, n_seeds))
    picked = grid[folds[..., None], seeds]
    return np.nanmean(picked.reshape(n_boot, -1), axis=1)


def mean_interval(grid: np.ndarray, rng: np.random.Generator, n_boot: int = BOOTSTRAP) -> tuple[float, float, float]:
    """Mean, and the 95% interval from the bootstrap standard error with a t quantile on folds - 1."""
    mean = float(np.nanmean(grid))
    n_folds = grid.shape[0]
    if n_folds < 2:
        return mean, float("nan"), float("nan")
    se = float(np.std(bootstrap_means(grid, n_boot, rng), ddof=1)) * math.sqrt(n_folds / (n_folds - 1))
    half = stats.t.ppf(0.975, n_folds - 1) * se
    return mean, mean - half, mean + half


def size_order(size: str) -> float:
    return math.inf if size == "full" else float(size)


def aggregate(results: pd.DataFrame, metric: str = "ua", seed: int = 0) -> pd.DataFrame:
    """Per (features, head, size): mean, std, 95% CI, training examples per class, runs."""
    rng = np.random.default_rng(seed)
    n_classes = sum(c.startswith("recall_") for c in results.columns) or 1
    rows = []
    for (features, head, size), runs in results.groupby([*CURVE_KEYS, "size"], sort=False):
        mean, low, high = mean_interval(_grid(runs, metric), rng)
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
    return sort_cells(pd.DataFrame(rows))


def sort_cells(table: pd.DataFrame) -> pd.DataFrame:
    """Rows by features and head in order of first appearance, then sizes ascending (``full`` last)."""
    rank = {key: pd.Series(pd.unique(table[key])) for key in CURVE_KEYS}
    keys = pd.DataFrame({key: table[key].map({v: i for i, v in enumerate(rank[key])}) for key in CURVE_KEYS})
    keys["size"] = table["size"].map(size_order)
    return table.loc[keys.sort_values([*CURVE_KEYS, "size"], kind="stable").index].reset_index(drop=True)


# -- laws ------------------------------------------------------------------------------------


def power_law(n, a, b, c):
    return a - b * np.power(n, -c)


def log_law(n, alpha, beta):
    return alpha + beta * np.log(n)


def figueroa_weights(n: np.ndarray) -> np.ndarray:
    """The i-th smallest of m sizes weighs i/m."""
    ranks = np.argsort(np.argsort(n)) + 1
    return ranks / len(n)


def fit_law(law: str, n: np.ndarray, ua: np.ndarray) -> np.ndarray | None:
    """Weighted least-squares parameters of a law, or None when it cannot be fitted."""
    n, ua = np.asarray(n, float), np.asarray(ua, float)
    sigma = 1 / np.sqrt(figueroa_weights(n))
    if law == LOG:
        if len(n) < 2:
            return None
        beta, alpha = np.polyfit(np.log(n), ua, 1, w=1 / sigma)
        return np.array([alpha, beta])
    if len(n) < 3:
        return None
    start = [min(1.0, ua.max() + 0.05), max(ua.max() - ua.min(), 0.05) * n.min() ** 0.5, 0.5]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OptimizeWarning)
            params, _ = curve_fit(
                power_law, n, ua, p0=start, sigma=sigma, bounds=([0, 0, 1e-3], [1.0, np.inf, 5.0]), maxfev=20_000
            )
    except (RuntimeError, ValueError):
        return None
    return params


def predict(law: str, params: np.ndarray, n) -> np.ndarray:
    return power_law(np.asarray(n, float), *params) if law == POWER else log_law(np.asarray(n, float), *params)


def solve_n(law: str, params: np.ndarray, target: float) -> float:
    """Examples per class at which the law reaches ``target``; inf when it never does."""
    if law == POWER:
        a, b, c = params
        return float((b / (a - target)) ** (1 / c)) if a > target else math.inf
    alpha, beta = params
    return float(math.exp((target - alpha) / beta)) if beta > 0 else math.inf


@dataclass
class LawFit:
    law: str
    params: np.ndarray | None
    rmse: float = float("nan")
    r2: float = float("nan")
    heldout_error: float = float("nan")  # |prediction - observed| at the largest size, fitted without it

    def describe(self) -> str:
        if self.params is None:
            return f"{self.law} law: could not be fitted"
        if self.law == POWER:
            a, b, c = self.params
            formula = f"UA = {a:.3f} - {b:.3f} n^-{c:.3f}"
        else:
            alpha, beta = self.params
            formula = f"UA = {alpha:.3f} + {beta:.4f} ln n"
        return f"{formula} (RMSE {self.rmse:.4f}, R² {self.r2:.3f}, held-out error {self.heldout_error:.4f})"


@dataclass
class CurveFit:
    """Both laws fitted to one curve, the chosen one, its bootstrap refits, and warnings."""

    features: str
    head: str
    n: np.ndarray  # examples per class, balanced sizes only
    ua: np.ndarray
    fits: dict[str, LawFit]
    chosen: str | None
    boot_params: list[np.ndarray] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)

    @property
    def chosen_fit(self) -> LawFit | None:
        return self.fits[self.chosen] if self.chosen else None

    def predict(self, n) -> np.ndarray:
        return predict(self.chosen, self.chosen_fit.params, n)

    def interval(self, n, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
        """Prediction interval of mean UA at ``n`` from the bootstrap refits."""
        draws = np.array([predict(self.chosen, p, n) for p in self.boot_params])
        tail = (1 - level) / 2 * 100
        return np.percentile(draws, tail, axis=0), np.percentile(draws, 100 - tail, axis=0)


def _score(law: str, n: np.ndarray, ua: np.ndarray) -> LawFit:
    params = fit_law(law, n, ua)
    if params is None:
        return LawFit(law, None)
    residuals = ua - predict(law, params, n)
    total = np.sum((ua - ua.mean()) ** 2)
    fit = LawFit(law, params, float(np.sqrt(np.mean(residuals**2))), float(1 - np.sum(residuals**2) / total) if total > 0 else float("nan"))
    order = np.argsort(n)
    heldout = fit_law(law, n[order[:-1]], ua[order[:-1]])
    if heldout is not None:
        fit.heldout_error = float(abs(predict(law, heldout, n[order[-1]]) - ua[order[-1]]))
    return fit


def fit_curve(results: pd.DataFrame, features: str, head: str, n_boot: int = 300, seed: int = 0) -> CurveFit:
    """Fit both laws to one curve's balanced sizes and choose one by the held-out check."""
    runs = results[(results["features"] == features) & (results["head"] == head) & (results["size"] != "full")]
    means = runs.groupby("size")["ua"].mean()
    n = np.array([float(s) for s in means.index])
    ua = means.to_numpy(dtype=float)
    order = np.argsort(n)
    n, ua = n[order], ua[order]
    fits = {law: _score(law, n, ua) for law in (POWER, LOG)}
    flags = []
    drops = np.flatnonzero(np.diff(ua) < 0)
    if len(drops):
        flags.append("not monotone: UA falls from " + ", ".join(f"{n[i]:g} to {n[i + 1]:g} per class" for i in drops))
    candidates = [law for law, fit in fits.items() if fit.params is not None]
    with_check = [law for law in candidates if not math.isnan(fits[law].heldout_error)]
    if with_check:
        chosen = min(with_check, key=lambda law: fits[law].heldout_error)
    elif LOG in candidates:
        chosen = LOG
        flags.append("too few sizes for a held-out check; the logarithmic law is used")
    else:
        chosen = None
        flags.append(f"no law can be fitted to {len(n)} size(s); measure at least 2 balanced sizes")
    if chosen and fits[chosen].r2 < 0.5 and len(n) > 2:
        flags.append(f"no law fits well (best R² {fits[chosen].r2:.2f}); treat extrapolations with caution")
    curve = CurveFit(features, head, n, ua, fits, chosen, flags=flags)
    if chosen:
        curve.boot_params = _bootstrap_fits(runs, chosen, n_boot, np.random.default_rng(seed))
    return curve


def _bootstrap_fits(runs: pd.DataFrame, law: str, n_boot: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Refit the law to size means of two-stage bootstrap resamples of the runs."""
    sizes = sorted(runs["size"].unique(), key=float)
    grids = [_grid(runs[runs["size"] == size], "ua") for size in sizes]
    draws = np.stack([bootstrap_means(g, n_boot, rng) for g in grids], axis=1)  # (n_boot, sizes)
    n = np.array([float(s) for s in sizes])
    params = []
    for row in draws:
        fitted = fit_law(law, n, row)
        if fitted is not None:
            params.append(fitted)
    return params


# -- planning --------------------------------------------------------------------------------


@dataclass
class Plan:
    """How many labels reach a target UA on one curve, and where the next labels pay most."""

    features: str
    head: str
    target: float
    n_classes: int
    per_class: float  # inf: not reachable under the fitted law
    per_class_interval: tuple[float, float]
    reach_probability: float  # share of bootstrap refits that reach the target
    ceiling: float | None  # the power law's asymptote, when that law is chosen
    largest_measured: float
    ua_at_largest: float
    next_step: float
    ua_next_step: tuple[float, float, float]  # prediction, interval low, high
    marginal_per_100: float  # UA points per 100 more labels in total, at the largest measured size
    class_needs: pd.DataFrame  # per class: recall at the largest size, gain per doubling
    notes: list[str]

    def statement(self) -> str:
        from budget.features import display_name

        curve = f"{display_name(self.features)} + {self.head}"
        if math.isinf(self.per_class):
            if self.ceiling is not None:
                return (
                    f"{curve}: the fitted ceiling is {self.ceiling:.3f} UA, below the "
                    f"target {self.target:.3f}; more labels of this kind are not expected to reach it"
                )
            return f"{curve}: the fitted curve does not reach {self.target:.3f} UA"
        low, high = self.per_class_interval
        if self.per_class <= self.largest_measured:
            return (
                f"{curve}: the target {self.target:.3f} UA is reached within the measured sizes, at about "
                f"{math.ceil(self.per_class)} labels per class (95% interval {_fmt(low)} to {_fmt(high)})"
            )
        return (
            f"{curve}: {math.ceil(self.per_class)} labels per class "
            f"({math.ceil(self.per_class) * self.n_classes} in total) reach {self.target:.3f} UA; 95% interval "
            f"{_fmt(low)} to {_fmt(high)} per class; {100 * self.reach_probability:.0f}% of bootstrap refits reach it"
        )


def _fmt(value: float) -> str:
    return "unbounded" if math.isinf(value) else f"{math.ceil(value)}"


def plan(results: pd.DataFrame, target: float, features: str, head: str, curve: CurveFit | None = None) -> Plan:
    """Labels needed for ``target`` UA on one curve, with its uncertainty and the classes that need labels."""
    if not 0 < target < 1:
        raise BudgetError(f"the target UA must be between 0 and 1; got {target}")
    curve = curve or fit_curve(results, features, head)
    if curve.chosen is None:
        raise BudgetError(f"{features} + {head}: " + "; ".join(curve.flags))
    classes = [c.removeprefix("recall_") for c in results.columns if c.startswith("recall_")]
    params = curve.chosen_fit.params
    needed = solve_n(curve.chosen, params, target)
    boot_needed = np.array([solve_n(curve.chosen, p, target) for p in curve.boot_params])
    finite = boot_needed[np.isfinite(boot_needed)]
    reach = len(finite) / len(boot_needed) if len(boot_needed) else float("nan")
    # inverted-CDF quantiles: refits that never reach the target count as infinite, without inf - inf
    interval = (
        float(np.percentile(boot_needed, 2.5, method="inverted_cdf")) if len(boot_needed) else math.nan,
        float(np.percentile(boot_needed, 97.5, method="inverted_cdf")) if len(boot_needed) else math.nan,
    )
    largest = float(curve.n.max())
    next_step = 2 * largest
    low, high = curve.interval([next_step])
    slope = _derivative(curve.chosen, params, largest)  # UA per label per class
    notes = list(curve.flags)
    if not math.isinf(needed) and needed > 4 * largest:
        notes.append(f"the answer extrapolates beyond 4x the largest measured size ({largest:g} per class)")
    return Plan(
        features=features,
        head=head,
        target=target,
        n_classes=len(classes),
        per_class=needed,
        per_class_interval=interval,
        reach_probability=reach,
        ceiling=float(params[0]) if curve.chosen == POWER else None,
        largest_measured=largest,
        ua_at_largest=float(curve.ua[np.argmax(curve.n)]),
        next_step=next_step,
        ua_next_step=(float(curve.predict([next_step])[0]), float(low[0]), float(high[0])),
        marginal_per_100=100 * slope / len(classes) if classes else float("nan"),
        class_needs=class_needs(results, features, head, classes),
        notes=notes,
    )


def _derivative(law: str, params: np.ndarray, n: float) -> float:
    if law == POWER:
        _, b, c = params
        return float(b * c * n ** (-c - 1))
    return float(params[1] / n)


def class_needs(results: pd.DataFrame, features: str, head: str, classes: list[str]) -> pd.DataFrame:
    """Per class: recall at the largest balanced size and its gain per doubling of the budget (log-law slope)."""
    runs = results[(results["features"] == features) & (results["head"] == head) & (results["size"] != "full")]
    sizes = runs["size"].astype(float)
    rows = []
    for name in classes:
        means = runs.groupby(sizes)[f"recall_{name}"].mean()
        n = means.index.to_numpy(dtype=float)
        slope = np.polyfit(np.log(n), means.to_numpy(), 1)[0] * math.log(2) if len(n) >= 2 else float("nan")
        rows.append({"class": name, "recall": float(means.iloc[-1]), "gain_per_doubling": float(slope)})
    table = pd.DataFrame(rows)
    # Most in need: low recall that labels still improve.
    table["priority"] = (1 - table["recall"]) * table["gain_per_doubling"].clip(lower=0)
    return table.sort_values("priority", ascending=False).reset_index(drop=True)


def confusion_at(results: pd.DataFrame, features: str, head: str, size: str) -> np.ndarray:
    """Summed confusion matrix over the runs of one size, normalised by row (true class)."""
    runs = results[(results["features"] == features) & (results["head"] == head) & (results["size"] == size)]
    total = sum(np.array(json.loads(c)) for c in runs["confusion"])
    return total / np.maximum(total.sum(axis=1, keepdims=True), 1)
