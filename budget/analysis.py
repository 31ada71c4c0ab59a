"""From a results table to curves, fitted laws, extrapolations and label budgets.

**Uncertainty respects the design.**  The runs of one (features, head, size)
are a folds x seeds grid; utterances within a held-out fold are not
independent, so resampling them would understate the uncertainty.  Intervals
come from a two-stage bootstrap: held-out folds drawn with replacement, then
seeds within each drawn fold.  The 95% interval of a mean is the bootstrap
standard error times Student's t quantile on (folds - 1) degrees of freedom,
which keeps its coverage with the 5 to 10 folds of real corpora, where plain
percentile intervals run narrow.

**Learning curves.**  Five laws of mean UA against training examples per class
``n`` are fitted (``FAMILIES`` holds their formulas, parameter bounds and the
fewest sizes each needs): the families that extrapolate best on the
learning-curve database LCDB (Mohr et al. 2022; Viering & Loog's survey) and
the paper's logarithmic law,

* ``pow3``: the inverse power law ``UA = a - b n^-c``,
* ``pow4``: with an offset, ``UA = a - b (d + n)^-c``,
* ``mmf4``: Morgan-Mercer-Flodin, ``UA = (a b + c n^d) / (b + n^d)``,
* ``wbl4``: Weibull, ``UA = c - b exp(-a n^d)``,
* ``log``: ``UA = alpha + beta ln n``.

Each is fitted by weighted least squares (scipy's ``curve_fit``; the i-th
smallest of m sizes weighs i/m, after Figueroa et al. 2012), with ``n`` in
units of the largest size so that every parameter is of order one, from
several starts.  UA is a fraction, so ceilings are bounded by 1.  A parameter
that ends on one of its bounds is flagged: the bound, not the data, shaped
that fit, and its extrapolation with it.  A four-parameter law needs one size
more than it has parameters, so that a residual is left.

**Choosing a law: the backtest.**  Each law is fitted to all sizes but the
largest and predicts it; where every law that can be backtested can spare
them, also to all but the two largest, predicting both.  Its backtest error
is the mean absolute error of those predictions (a UA fraction, reported in
points).  The law with the smallest backtest error is used, except that one
with a parameter on a bound gives way to a law without, when that predicts as
well (within the standard error of the largest size's mean); otherwise it is
used with a flag that says so.  With too few sizes for any backtest, the
logarithmic law (two parameters) is used, with a flag.  Extrapolations carry
95% prediction intervals from refitting on bootstrap resamples of the runs.

**Plans** invert the chosen law (in closed form, for every family).  Their
intervals are never narrower than the backtest error: the UA interval is
widened by it, and the labels interval reaches at least from ``target -
error`` to ``target + error`` through the law.  A plan that lies beyond
``EXTRAPOLATION_LIMIT`` times the largest measured size says so first and
recommends measuring double the largest size next, collecting labels in
rounds (Mahmood et al., CVPR 2022, "How Much More Data Do I Need?").
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats
from scipy.optimize import OptimizeWarning, curve_fit

from budget.errors import BudgetError
from budget.metrics import recall_column, result_classes
from budget.results import CURVE_KEYS, RESULT_KEY, sort_results
from budget.sampling import is_balanced, size_value

BOOTSTRAP = 1000


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
        mean, low, high = mean_interval(_grid(runs, metric), rng, bounds=(0.0, 1.0))  # every metric is a rate
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
            grid = _grid(paired.rename("gain").reset_index(), "gain")
            mean, low, high = mean_interval(100 * grid, rng)
            rows.append({"head": head, "size": size, "features": features, "baseline": feature_sets[0],
                         "gain_points": mean, "ci_low": low, "ci_high": high, "runs": len(paired)})  # fmt: skip
    return pd.DataFrame(rows, columns=["head", "size", "features", "baseline", "gain_points", "ci_low", "ci_high", "runs"])


# -- laws ------------------------------------------------------------------------------------


def pow3(n, a, b, c):
    return a - b * np.power(n, -c)


def pow4(n, a, b, c, d):
    return a - b * np.power(d + n, -c)


def mmf4(n, a, b, c, d):
    grown = np.power(n, d)
    return (a * b + c * grown) / (b + grown)


def wbl4(n, a, b, c, d):
    return c - b * np.exp(-a * np.power(n, d))


def log_law(n, alpha, beta):
    return alpha + beta * np.log(n)


def _power(base, exponent) -> float:
    """``base ** exponent`` as a float, inf where it overflows."""
    with np.errstate(over="ignore", divide="ignore"):
        return float(np.power(np.float64(base), exponent))


def _pow3_n(params: np.ndarray, target: float) -> float:
    a, b, c = params
    return _power(b / (a - target), 1 / c) if a > target else math.inf


def _pow4_n(params: np.ndarray, target: float) -> float:
    a, b, c, d = params
    return max(0.0, _power(b / (a - target), 1 / c) - d) if a > target else math.inf


def _mmf4_n(params: np.ndarray, target: float) -> float:
    a, b, c, d = params  # UA runs from a at n = 0 to c as n grows
    if target <= a:
        return 0.0
    return _power(b * (target - a) / (c - target), 1 / d) if c > target else math.inf


def _wbl4_n(params: np.ndarray, target: float) -> float:
    a, b, c, d = params  # UA runs from c - b at n = 0 to c as n grows
    if target <= c - b:
        return 0.0
    return _power(math.log(b / (c - target)) / a, 1 / d) if c > target and a > 0 else math.inf


def _log_n(params: np.ndarray, target: float) -> float:
    alpha, beta = params
    return _power(math.e, (target - alpha) / beta) if beta > 0 else math.inf


def _pow3_starts(n: np.ndarray, ua: np.ndarray) -> list[list[float]]:
    """A ceiling just above the data, exponents 0.3 and 1, through the smallest size's UA."""
    ceiling = min(1.0, ua.max() + 0.05)
    return [[ceiling, (ceiling - ua.min()) * n.min() ** c, c] for c in (0.3, 1.0)]


def _pow4_starts(n: np.ndarray, ua: np.ndarray) -> list[list[float]]:
    """As for pow3, with offsets of a tenth of and all of the smallest size."""
    ceiling, offsets = min(1.0, ua.max() + 0.05), (0.1 * n.min(), n.min())
    return [[ceiling, (ceiling - ua.min()) * (n.min() + d) ** c, c, d] for c in (0.3, 1.0) for d in offsets]


def _mmf4_starts(n: np.ndarray, ua: np.ndarray) -> list[list[float]]:
    """Floor below and ceiling above the data, half-way at the sizes' geometric mean, three steepnesses."""
    floor, ceiling, middle = max(0.0, 2 * ua.min() - ua.max()), min(1.0, ua.max() + 0.05), stats.gmean(n)
    return [[floor, middle**d, ceiling, d] for d in (0.5, 1.0, 2.0)]


def _wbl4_starts(n: np.ndarray, ua: np.ndarray) -> list[list[float]]:
    """Floor below and ceiling above the data, half the rise by the sizes' geometric mean, two shapes."""
    floor, ceiling, middle = max(0.0, 2 * ua.min() - ua.max()), min(1.0, ua.max() + 0.05), stats.gmean(n)
    return [[math.log(2) / middle**d, ceiling - floor, ceiling, d] for d in (0.5, 1.0)]


@dataclass(frozen=True)
class Family:
    """One law: formula, parameters with bounds, how few sizes it needs, rescaling, inverse and fitting starts.

    Bounds apply with ``n`` in units of the largest fitted size, where every parameter is of order one.
    """

    name: str
    function: Callable[..., np.ndarray]
    formula: str  # str.format template over the parameter names
    names: tuple[str, ...]
    lower: tuple[float, ...]
    upper: tuple[float, ...]
    min_sizes: int
    ceiling: str | None  # the parameter UA approaches as n grows, if the law has one
    rescale: Callable[[np.ndarray, float], np.ndarray]  # parameters in n, from those in n / k
    inverse: Callable[[np.ndarray, float], float]  # n at which UA reaches a target
    starts: Callable[[np.ndarray, np.ndarray], list[list[float]]] | None  # None: linear least squares


POW3, POW4, MMF4, WBL4, LOG = "pow3", "pow4", "mmf4", "wbl4", "log"
SLOPE = (1e-3, 5.0)  # bounds of exponents and shapes: from nearly flat to far steeper than any measured curve

#: The laws fitted to every curve, and the one place their parameter counts and minimum sizes are written.  Two-
#: and three-parameter laws need as many sizes as parameters; four-parameter ones one more, leaving a residual.
FAMILIES: dict[str, Family] = {
    family.name: family
    for family in (
        Family(POW3, pow3, "UA = {a:.3f} - {b:.4g} n^-{c:.3f}", ("a", "b", "c"),
               (0.0, 0.0, SLOPE[0]), (1.0, math.inf, SLOPE[1]), 3, "a",
               lambda p, k: np.array([p[0], p[1] * k ** p[2], p[2]]), _pow3_n, _pow3_starts),
        Family(POW4, pow4, "UA = {a:.3f} - {b:.4g} ({d:.4g} + n)^-{c:.3f}", ("a", "b", "c", "d"),
               (0.0, 0.0, SLOPE[0], 0.0), (1.0, math.inf, SLOPE[1], math.inf), 5, "a",
               lambda p, k: np.array([p[0], p[1] * k ** p[2], p[2], p[3] * k]), _pow4_n, _pow4_starts),
        Family(MMF4, mmf4, "UA = ({a:.3f} * {b:.4g} + {c:.3f} n^{d:.3f}) / ({b:.4g} + n^{d:.3f})", ("a", "b", "c", "d"),
               (0.0, 0.0, 0.0, SLOPE[0]), (1.0, math.inf, 1.0, SLOPE[1]), 5, "c",
               lambda p, k: np.array([p[0], p[1] * k ** p[3], p[2], p[3]]), _mmf4_n, _mmf4_starts),
        Family(WBL4, wbl4, "UA = {c:.3f} - {b:.3f} exp(-{a:.4g} n^{d:.3f})", ("a", "b", "c", "d"),
               (0.0, 0.0, 0.0, SLOPE[0]), (math.inf, 1.0, 1.0, SLOPE[1]), 5, "c",
               lambda p, k: np.array([p[0] * k ** -p[3], p[1], p[2], p[3]]), _wbl4_n, _wbl4_starts),
        Family(LOG, log_law, "UA = {alpha:.3f} + {beta:.4f} ln n", ("alpha", "beta"),
               (-math.inf, -math.inf), (math.inf, math.inf), 2, None,
               lambda p, k: np.array([p[0] - p[1] * math.log(k), p[1]]), _log_n, None),
    )
}  # fmt: skip
BOUND_TOL = 1e-3  # a parameter this close to a bound (relative to the bound, at least 1) is on it
PLAUSIBLE_LIMIT = 10  # no count is printed beyond this multiple of the largest measured size
EXTRAPOLATION_LIMIT = 4  # plans beyond this multiple of the largest measured size are collected in rounds


def figueroa_weights(n: np.ndarray) -> np.ndarray:
    """The i-th smallest of m sizes weighs i/m."""
    ranks = np.argsort(np.argsort(n)) + 1
    return ranks / len(n)


def fit_law(law: str, n: np.ndarray, ua: np.ndarray, start: np.ndarray | None = None) -> np.ndarray | None:
    """Weighted least-squares parameters of a law, or None when it cannot be fitted.

    Nonlinear laws are fitted with ``n`` in units of the largest size, from ``start`` (parameters in ``n``)
    or from each of the family's starts, keeping the best; the parameters come back in ``n``.
    """
    family = FAMILIES[law]
    n, ua = np.asarray(n, float), np.asarray(ua, float)
    if len(n) < family.min_sizes:
        return None
    sigma = 1 / np.sqrt(figueroa_weights(n))
    if family.starts is None:
        beta, alpha = np.polyfit(np.log(n), ua, 1, w=1 / sigma)
        return np.array([alpha, beta])
    scale = n.max()
    x = n / scale
    starts = [family.rescale(start, 1 / scale)] if start is not None else family.starts(x, ua)
    best, best_loss = None, math.inf
    for p0 in starts:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", OptimizeWarning)
                warnings.simplefilter("ignore", RuntimeWarning)  # overflow on the way to a far-off start
                params, _ = curve_fit(family.function, x, ua, p0=np.clip(p0, family.lower, family.upper), sigma=sigma,
                                      bounds=(family.lower, family.upper), maxfev=20_000)  # fmt: skip
        except (RuntimeError, ValueError):
            continue
        loss = float(np.sum(((ua - family.function(x, *params)) / sigma) ** 2))
        if loss < best_loss:
            best, best_loss = params, loss
    return None if best is None else family.rescale(best, scale)


def on_bounds(law: str, params: np.ndarray, scale: float) -> list[str]:
    """The parameters of a fit (to sizes up to ``scale``) that sit on a bound, described."""
    family = FAMILIES[law]
    scaled = family.rescale(params, 1 / scale)
    found = []
    for name, value, low, high in zip(family.names, scaled, family.lower, family.upper, strict=True):
        for side, bound in (("lower", low), ("upper", high)):
            if math.isfinite(bound) and abs(value - bound) <= BOUND_TOL * max(1.0, abs(bound)):
                role = " (the ceiling)" if name == family.ceiling else ""
                found.append(f"{name} on its {side} bound {bound:g}{role}")
    return found


def predict(law: str, params: np.ndarray, n) -> np.ndarray:
    return FAMILIES[law].function(np.asarray(n, float), *params)


def solve_n(law: str, params: np.ndarray, target: float) -> float:
    """Examples per class at which the law reaches ``target`` (closed form for every family); inf when it never does."""
    return FAMILIES[law].inverse(params, target)


def backtest_depth(sizes: int) -> int:
    """Held-out sizes of the backtest: the two largest when every law that can be backtested can spare both.

    Every law is scored on the same held-out sizes, so that their errors compare.
    """
    spared = [family.min_sizes for family in FAMILIES.values() if family.min_sizes <= sizes - 1]
    return 2 if spared and max(spared) <= sizes - 2 else 1


def backtest(law: str, n: np.ndarray, ua: np.ndarray, depth: int) -> float:
    """Mean |prediction - observed| of the ``depth`` largest sizes, each fit leaving out 1 to ``depth`` of them.

    NaN when the law cannot be fitted to what is left.
    """
    errors = []
    for left_out in range(1, depth + 1):
        params = fit_law(law, n[:-left_out], ua[:-left_out])
        if params is None:
            return math.nan
        errors.extend(np.abs(predict(law, params, n[-left_out:]) - ua[-left_out:]))
    return float(np.mean(errors))


def _points(error: float) -> str:
    return f"{100 * error:.2f} UA points"


@dataclass
class LawFit:
    law: str
    params: np.ndarray | None
    sizes: int  # balanced sizes it was fitted to
    rmse: float = float("nan")
    r2: float = float("nan")
    backtest_error: float = float("nan")  # mean |prediction - observed| of the held-out sizes, a UA fraction
    flags: list[str] = field(default_factory=list)  # parameters on a bound

    def describe(self) -> str:
        family = FAMILIES[self.law]
        if self.params is None:
            if self.sizes < family.min_sizes:
                return f"{self.law}: not fitted: needs {family.min_sizes} sizes, has {self.sizes}"
            return f"{self.law}: could not be fitted"
        formula = family.formula.format(**dict(zip(family.names, self.params, strict=True)))
        if not math.isnan(self.backtest_error):
            backtest = f"backtest error {_points(self.backtest_error)}"
        elif self.sizes <= family.min_sizes:
            backtest = f"not backtested: needs {family.min_sizes + 1} sizes"
        else:
            backtest = "not backtested: the fit without the largest sizes failed"
        bounds = f"; on a bound: {', '.join(self.flags)}" if self.flags else ""
        return f"{self.law}: {formula} (RMSE {self.rmse:.4f}, R² {self.r2:.3f}, {backtest}){bounds}"


@dataclass
class CurveFit:
    """Every law fitted to one curve, the chosen one and why, its bootstrap refits, and warnings."""

    features: str
    head: str
    n: np.ndarray  # examples per class, balanced sizes only
    ua: np.ndarray
    fits: dict[str, LawFit]
    chosen: str | None
    reason: str = ""  # why the chosen law was chosen
    boot_params: list[np.ndarray] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)

    @property
    def chosen_fit(self) -> LawFit | None:
        return self.fits[self.chosen] if self.chosen else None

    @property
    def backtest_error(self) -> float:
        """The chosen law's backtest error (NaN when it could not be backtested)."""
        return self.chosen_fit.backtest_error if self.chosen else math.nan

    def predict(self, n) -> np.ndarray:
        return predict(self.chosen, self.chosen_fit.params, n)

    def interval(self, n, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
        """Prediction interval of mean UA at ``n`` from the bootstrap refits (NaN without any)."""
        if not self.boot_params:
            return np.full(len(n), np.nan), np.full(len(n), np.nan)
        draws = np.array([predict(self.chosen, p, n) for p in self.boot_params])
        tail = (1 - level) / 2 * 100
        return np.percentile(draws, tail, axis=0), np.percentile(draws, 100 - tail, axis=0)


def _score(law: str, n: np.ndarray, ua: np.ndarray, depth: int) -> LawFit:
    params = fit_law(law, n, ua)
    if params is None:
        return LawFit(law, None, len(n))
    residuals = ua - predict(law, params, n)
    total = np.sum((ua - ua.mean()) ** 2)
    return LawFit(
        law,
        params,
        len(n),
        float(np.sqrt(np.mean(residuals**2))),
        float(1 - np.sum(residuals**2) / total) if total > 0 else float("nan"),
        backtest(law, n, ua, depth),
        on_bounds(law, params, float(n.max())),
    )


def choose_law(fits: dict[str, LawFit], noise: float) -> tuple[str | None, str, list[str]]:
    """The law to extrapolate with, why, and flags: the smallest backtest error, preferring no parameter on a bound.

    A law with a parameter on a bound gives way to one without that predicts as well: a backtest error within
    ``noise`` (the standard error of the largest size's mean UA) of its own.
    """
    tested = {law: fit for law, fit in fits.items() if not math.isnan(fit.backtest_error)}
    if not tested:
        if fits[LOG].params is not None:
            reason = "too few sizes for a backtest; the logarithmic law (two parameters) is used"
            return LOG, reason, [reason]
        needed = FAMILIES[LOG].min_sizes
        return None, "", [f"no law can be fitted to {fits[LOG].sizes} size(s); measure at least {needed} balanced sizes"]
    best = min(tested, key=lambda law: tested[law].backtest_error)
    error = tested[best].backtest_error
    if not tested[best].flags:
        return best, f"smallest backtest error ({_points(error)})", []
    bounded = f"{best} predicts the held-out sizes best ({_points(error)}) but has {'; '.join(tested[best].flags)}"
    clean = [law for law, fit in tested.items() if not fit.flags and fit.backtest_error <= error + noise]
    if clean:
        pick = min(clean, key=lambda law: tested[law].backtest_error)
        within = f"{_points(tested[pick].backtest_error)}, within the {_points(noise)} standard error of the largest size"
        return pick, f"{bounded}; {pick} has no parameter on a bound and predicts as well ({within})", []
    reason = f"{bounded}; it is chosen despite that, as no law without a parameter on a bound predicts as well"
    return best, reason, [f"{reason}: its extrapolations lean on that bound"]


def _standard_error(runs: pd.DataFrame) -> float:
    """Standard error of mean UA over held-out folds (0 with a single fold)."""
    fold_means = runs.groupby("fold")["ua"].mean()
    return float(fold_means.std(ddof=1) / math.sqrt(len(fold_means))) if len(fold_means) > 1 else 0.0


def fit_curve(results: pd.DataFrame, features: str, head: str, n_boot: int = 300, seed: int = 0) -> CurveFit:
    """Fit every law to one curve's balanced sizes and choose one by the backtest."""
    runs = results[(results["features"] == features) & (results["head"] == head) & is_balanced(results["size"])]
    means = runs.groupby("size")["ua"].mean()
    n = np.array([size_value(s) for s in means.index])
    ua = means.to_numpy(dtype=float)
    order = np.argsort(n)
    n, ua = n[order], ua[order]
    depth = backtest_depth(len(n))
    fits = {law: _score(law, n, ua, depth) for law in FAMILIES}
    flags = []
    drops = np.flatnonzero(np.diff(ua) < 0)
    if len(drops):
        flags.append("not monotone: UA falls from " + ", ".join(f"{n[i]:g} to {n[i + 1]:g} per class" for i in drops))
    noise = _standard_error(runs[runs["size"].map(size_value) == n.max()]) if len(n) else 0.0
    chosen, reason, choice_flags = choose_law(fits, noise)
    flags += choice_flags
    if chosen and fits[chosen].r2 < 0.5 and len(n) > 2:
        flags.append(f"no law fits well (best R² {fits[chosen].r2:.2f}); treat extrapolations with caution")
    curve = CurveFit(features, head, n, ua, fits, chosen, reason, flags=flags)
    if chosen:
        curve.boot_params = _bootstrap_fits(runs, chosen, fits[chosen].params, n_boot, np.random.default_rng(seed))
    return curve


def _bootstrap_fits(
    runs: pd.DataFrame, law: str, start: np.ndarray, n_boot: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Refit the law, from its fit to the data, to size means of two-stage bootstrap resamples of the runs."""
    sizes = sorted(runs["size"].unique(), key=float)
    grids = [_grid(runs[runs["size"] == size], "ua") for size in sizes]
    draws = np.stack([bootstrap_means(g, n_boot, rng) for g in grids], axis=1)  # (n_boot, sizes)
    n = np.array([float(s) for s in sizes])
    params = []
    for row in draws:
        fitted = fit_law(law, n, row, start)
        if fitted is not None:
            params.append(fitted)
    return params


# -- planning --------------------------------------------------------------------------------


@dataclass
class Plan:
    """How many labels reach a target UA on one curve, and where the next labels pay most."""

    features: str
    head: str
    law: str  # the law the plan extrapolates with
    target: float
    n_classes: int
    per_class: float  # inf: not reachable under the fitted law
    per_class_interval: tuple[float, float]  # bootstrap interval, widened by the backtest error
    reach_probability: float  # share of bootstrap refits that reach the target
    ceiling: float | None  # the chosen law's asymptote, when it has one
    backtest_error: float  # the chosen law's, a UA fraction (NaN: too few sizes for a backtest)
    largest_measured: float
    ua_at_largest: float
    next_step: float  # the size to measure next: double the largest measured (labels collected in rounds)
    ua_next_step: tuple[float, float, float]  # prediction, interval low, high (widened by the backtest error)
    marginal_per_100: float  # UA points per 100 more labels in total, at the largest measured size
    class_needs: pd.DataFrame  # per class: recall at the largest size, gain per doubling
    notes: list[str]
    first_reaching: tuple[float, float] | None = None  # the smallest measured size whose mean UA reaches the target, its UA

    @property
    def beyond_limit(self) -> bool:
        """Whether the answer lies beyond ``EXTRAPOLATION_LIMIT`` times the largest measured size."""
        return math.isfinite(self.per_class) and self.per_class > EXTRAPOLATION_LIMIT * self.largest_measured

    def statement(self) -> str:
        from budget.features import display_name

        curve = f"{display_name(self.features)} + {self.head}"
        if math.isinf(self.per_class):
            if self.first_reaching is not None:
                size, ua = self.first_reaching
                return (
                    f"{curve}: {size:g} per class already measured UA {ua:.3f}, at or above the target "
                    f"{self.target:.3f}; the fitted {self.law} law does not rise to the target (the measured curve "
                    "does not grow steadily with labels here), so what was measured is the answer"
                )
            if self.ceiling is not None and self.ceiling <= self.target:
                return (
                    f"{curve}: the fitted ceiling is {self.ceiling:.3f} UA, below the "
                    f"target {self.target:.3f}; more labels of this kind are not expected to reach it"
                )
            return f"{curve}: the fitted curve does not reach {self.target:.3f} UA"
        low, high = self.per_class_interval
        if self.per_class > PLAUSIBLE_LIMIT * self.largest_measured:
            return (
                f"{curve}: the {self.law} law puts {self.target:.3f} UA beyond {PLAUSIBLE_LIMIT}x the largest measured "
                f"size ({self.largest_measured:g} per class), too far for any count to be trusted: measure "
                f"{self.next_step:g} per class next and refit"
            )
        if self.per_class <= self.largest_measured:
            return (
                f"{curve}: the target {self.target:.3f} UA is reached within the measured sizes, at about "
                f"{math.ceil(self.per_class)} labels per class (95% interval {self._fmt(low)} to {self._fmt(high)})"
            )
        answer = (
            f"{math.ceil(self.per_class)} labels per class "
            f"({math.ceil(self.per_class) * self.n_classes} in total) reach {self.target:.3f} UA; 95% interval "
            f"{self._fmt(low)} to {self._fmt(high)} per class; {100 * self.reach_probability:.0f}% of bootstrap refits reach it"
        )
        if self.beyond_limit:
            return (
                f"{curve}: more than {EXTRAPOLATION_LIMIT}x the largest measured size ({self.largest_measured:g} per "
                f"class) is needed, too far to extrapolate to in one go: measure {self.next_step:g} per class next and "
                f"refit, collecting labels in rounds; the {self.law} law now says {answer}"
            )
        return f"{curve}: {answer}"

    def _fmt(self, value: float) -> str:
        """A count of labels per class; beyond what any fit can say (10x the measured sizes), a plain statement."""
        if value > PLAUSIBLE_LIMIT * self.largest_measured:
            return f"beyond {PLAUSIBLE_LIMIT}x the measured sizes"
        return f"{math.ceil(value)}"


def plan(results: pd.DataFrame, target: float, features: str, head: str, curve: CurveFit | None = None) -> Plan:
    """Labels needed for ``target`` UA on one curve, with its uncertainty and the classes that need labels.

    Both intervals are at least as wide as the chosen law's backtest error: the UA interval is widened by it, and
    the labels interval reaches from where the law puts ``target`` - error to where it puts ``target`` + error
    wherever that is wider than the bootstrap's.
    """
    if not 0 < target < 1:
        raise BudgetError(f"the target UA must be between 0 and 1; got {target}")
    curve = curve or fit_curve(results, features, head)
    if curve.chosen is None:
        raise BudgetError(f"{features} + {head}: " + "; ".join(curve.flags))
    classes = result_classes(results)
    law, params = curve.chosen, curve.chosen_fit.params
    error = 0.0 if math.isnan(curve.backtest_error) else curve.backtest_error
    needed = solve_n(law, params, target)
    boot_needed = np.array([solve_n(law, p, target) for p in curve.boot_params])
    finite = boot_needed[np.isfinite(boot_needed)]
    reach = len(finite) / len(boot_needed) if len(boot_needed) else float("nan")
    # inverted-CDF quantiles: refits that never reach the target count as infinite, without inf - inf
    boot = [np.percentile(boot_needed, q, method="inverted_cdf") if len(boot_needed) else math.nan for q in (2.5, 97.5)]
    interval = (
        float(np.fmin(boot[0], solve_n(law, params, target - error))),
        float(np.fmax(boot[1], solve_n(law, params, target + error))),
    )
    largest = float(curve.n.max())
    next_step = 2 * largest
    low, high = curve.interval([next_step])
    expected = float(curve.predict([next_step])[0])
    family = FAMILIES[law]
    reaching = np.flatnonzero(curve.ua >= target)
    first = int(reaching[np.argmin(curve.n[reaching])]) if len(reaching) else None
    return Plan(
        features=features,
        head=head,
        law=law,
        target=target,
        n_classes=len(classes),
        per_class=needed,
        per_class_interval=interval,
        reach_probability=reach,
        ceiling=float(params[family.names.index(family.ceiling)]) if family.ceiling else None,
        backtest_error=curve.backtest_error,
        largest_measured=largest,
        ua_at_largest=float(curve.ua[np.argmax(curve.n)]),
        next_step=next_step,
        ua_next_step=_as_ua(expected, np.fmin(low[0], expected) - error, np.fmax(high[0], expected) + error),
        marginal_per_100=100 * _slope(law, params, largest) / len(classes) if classes else float("nan"),
        class_needs=class_needs(results, features, head, classes),
        notes=[*curve.flags, *([f"the {law} law passes 100% UA by {next_step:g} per class: shown as 1.000 there, a trend "
                                "rather than a value"] if expected > 1 else [])],
        first_reaching=None if first is None else (float(curve.n[first]), float(curve.ua[first])),
    )


def _as_ua(expected: float, low: float, high: float) -> tuple[float, float, float]:
    """The three cut to [0, 1]: UA is a share of recall, whatever a law extrapolates or an interval's widening adds."""
    return float(np.clip(expected, 0, 1)), float(np.clip(low, 0, 1)), float(np.clip(high, 0, 1))


def _slope(law: str, params: np.ndarray, n: float, step: float = 1e-4) -> float:
    """UA per label per class at ``n``, by a central difference over ``n`` ± ``step`` n."""
    low, high = predict(law, params, [n * (1 - step), n * (1 + step)])
    return float((high - low) / (2 * step * n))


def class_needs(results: pd.DataFrame, features: str, head: str, classes: list[str]) -> pd.DataFrame:
    """Per class: recall at the largest balanced size and its gain per doubling of the budget (log-law slope)."""
    runs = results[(results["features"] == features) & (results["head"] == head) & is_balanced(results["size"])]
    sizes = runs["size"].map(size_value)
    rows = []
    for name in classes:
        means = runs.groupby(sizes)[recall_column(name)].mean()
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


# -- the labels-needed answer ----------------------------------------------------------------

#: Rungs of the labels-needed ladder: every this many UA points above the best measured mean.
LADDER_STEP = 0.05
LADDER_RUNGS = 4


def target_ladder(table: pd.DataFrame, curves: list[CurveFit], target: float | None = None) -> list[float]:
    """Targets worth an answer: every 5 UA points from just above the best measured mean UA up to the highest
    fitted ceiling (at most four), and the user's ``target``.

    ``table`` is :func:`aggregate`'s summary.
    """
    best = float(table["mean"].max())
    unbounded = best + LADDER_RUNGS * LADDER_STEP  # a law without a ceiling (the log law) is asked this far
    tops = [_ceiling(curve) or unbounded for curve in curves if curve.chosen]
    top = min(max(tops, default=unbounded), 0.995)
    first = math.floor(best / LADDER_STEP + 1) * LADDER_STEP
    rungs = [round(first + i * LADDER_STEP, 4) for i in range(LADDER_RUNGS) if first + i * LADDER_STEP < top]
    return sorted({*rungs, *([round(target, 4)] if target is not None else [])})


def _ceiling(curve: CurveFit) -> float | None:
    family = FAMILIES[curve.chosen]
    return float(curve.chosen_fit.params[family.names.index(family.ceiling)]) if family.ceiling else None


def labels_needed(results: pd.DataFrame, curves: list[CurveFit], targets: list[float]) -> pd.DataFrame:
    """Per curve and target: labels per class and in total, the 95% interval, and how the answer is known.

    ``status`` is ``interpolated`` (within the measured sizes), ``extrapolated``
    (``factor`` times the largest measured size), ``too far`` (beyond
    :data:`PLAUSIBLE_LIMIT` times it: no count is given, ``next_size`` is the
    size to measure next) or ``not reached`` (the fitted ceiling lies below).
    """
    rows = []
    for curve in (c for c in curves if c.chosen):
        for target in targets:
            answer = plan(results, target, curve.features, curve.head, curve)
            low, high = answer.per_class_interval
            factor = answer.per_class / answer.largest_measured
            if math.isinf(answer.per_class):
                status = "not reached"
            elif factor > PLAUSIBLE_LIMIT:
                status = "too far"
            else:
                status = "interpolated" if factor <= 1 else "extrapolated"
            counted = status in ("interpolated", "extrapolated")
            rows.append(
                {
                    "features": curve.features, "head": curve.head, "target": target, "status": status,
                    "per_class": math.ceil(answer.per_class) if counted else math.nan,
                    "total": math.ceil(answer.per_class) * answer.n_classes if counted else math.nan,
                    "low": low if counted else math.nan,
                    "high": high if counted and high <= PLAUSIBLE_LIMIT * answer.largest_measured else math.nan,
                    "factor": factor if counted else math.nan,
                    "ceiling": answer.ceiling, "next_size": answer.next_step,
                    "largest_measured": answer.largest_measured, "backtest_error": answer.backtest_error,
                }
            )  # fmt: skip
    return pd.DataFrame(rows)


def recommend(table: pd.DataFrame, needed: pd.DataFrame, target: float | None = None) -> str:
    """One sentence naming the configuration to choose, and why.

    With a target: the curve that reaches it with the fewest labels, against
    the next best.  Without: the highest measured UA at the largest balanced
    size, and what the next best reaches there.
    """
    from budget.features import display_name

    def name(row) -> str:
        return f"{display_name(row['features'])} + {row['head']}"

    if target is not None:
        reaching = needed[(needed["target"] == round(target, 4)) & needed["per_class"].notna()].sort_values("per_class")
        if reaching.empty:
            return (f"No configuration reaches UA {target:.2f} within {PLAUSIBLE_LIMIT}x the measured sizes; "
                    "measure a larger size first (the plan below names it).")  # fmt: skip
        best = reaching.iloc[0]
        sentence = (f"Recommended for UA {target:.2f}: {name(best)}, about {best['per_class']:.0f} labels per class "
                    f"({best['total']:.0f} in total; {best['status']})")  # fmt: skip
        if len(reaching) > 1:
            runner_up = reaching.iloc[1]
            sentence += (f"; the next best, {name(runner_up)}, needs {runner_up['per_class']:.0f} per class, "
                         f"{runner_up['per_class'] / best['per_class']:.1f} times as many labels")  # fmt: skip
        return sentence + "."
    balanced = table[is_balanced(table["size"])]
    at_largest = balanced[balanced["n_per_class"] == balanced.groupby(["features", "head"])["n_per_class"].transform("max")]
    ranked = at_largest.sort_values("mean", ascending=False)
    best = ranked.iloc[0]
    sentence = (f"Recommended: {name(best)}, UA {best['mean']:.3f} (95% CI {best['ci_low']:.3f} to {best['ci_high']:.3f}) "
                f"at {best['n_per_class']:g} labels per class, the highest measured")  # fmt: skip
    if len(ranked) > 1:
        runner_up = ranked.iloc[1]
        sentence += f"; the next best, {name(runner_up)}, reaches {runner_up['mean']:.3f} there"
    return sentence + "."
