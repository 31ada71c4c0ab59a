"""Learning-curve laws fitted to a curve's mean UA, and the backtest that chooses among them.

(One file: each law's formula, inverse, starts and bounds are read side by side in :data:`FAMILIES`.)

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
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats
from scipy.optimize import OptimizeWarning, curve_fit

from budget.analysis.intervals import bootstrap_means, exact_mean, run_grid
from budget.results import curve_runs


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
    runs = curve_runs(results, features, head, balanced=True)
    means = runs.groupby("size")["ua"].agg(exact_mean)
    n = np.array([size.value for size in means.index])
    ua = means.to_numpy(dtype=float)
    order = np.argsort(n)
    n, ua = n[order], ua[order]
    depth = backtest_depth(len(n))
    fits = {law: _score(law, n, ua, depth) for law in FAMILIES}
    flags = []
    drops = np.flatnonzero(np.diff(ua) < 0)
    if len(drops):
        flags.append("not monotone: UA falls from " + ", ".join(f"{n[i]:g} to {n[i + 1]:g} per class" for i in drops))
    noise = _standard_error(runs[runs["size"] == max(means.index)]) if len(n) else 0.0
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
    sizes = sorted(runs["size"].unique())
    grids = [run_grid(runs[runs["size"] == size], "ua") for size in sizes]
    draws = np.stack([bootstrap_means(g, n_boot, rng) for g in grids], axis=1)  # (n_boot, sizes)
    n = np.array([size.value for size in sizes])
    params = []
    for row in draws:
        fitted = fit_law(law, n, row, start)
        if fitted is not None:
            params.append(fitted)
    return params
