"""From fitted curves to label budgets: labels needed for a target UA, with intervals, and per class.

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
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from budget.analysis.laws import EXTRAPOLATION_LIMIT, FAMILIES, PLAUSIBLE_LIMIT, CurveFit, fit_curve, predict, solve_n
from budget.errors import BudgetError
from budget.features import display_name
from budget.metrics import recall_column, result_classes
from budget.results import curve_runs
from budget.sampling import Size


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
    clips_at_random: tuple[float, float, float] | None = None  # clips labelled at random to get per_class of each class

    @property
    def beyond_limit(self) -> bool:
        """Whether the answer lies beyond ``EXTRAPOLATION_LIMIT`` times the largest measured size."""
        return math.isfinite(self.per_class) and self.per_class > EXTRAPOLATION_LIMIT * self.largest_measured

    def statement(self, show: Callable[[str], str] = display_name) -> str:
        """The plan in one sentence; ``show`` names feature sets for a reader."""
        curve = f"{show(self.features)} + {self.head}"
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


def plan(results: pd.DataFrame, target: float, features: str, head: str, curve: CurveFit | None = None,
         class_counts: dict[str, int] | None = None) -> Plan:  # fmt: skip
    """Labels needed for ``target`` UA on one curve, with its uncertainty and the classes that need labels; given the
    corpus's ``class_counts``, also the clips a team labelling at random must annotate to get them
    (:func:`clips_at_random`).

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
        clips_at_random=clips_at_random(class_counts, needed) if class_counts and math.isfinite(needed) else None,
    )


def _as_ua(expected: float, low: float, high: float) -> tuple[float, float, float]:
    """The three cut to [0, 1]: UA is a share of recall, whatever a law extrapolates or an interval's widening adds."""
    return float(np.clip(expected, 0, 1)), float(np.clip(low, 0, 1)), float(np.clip(high, 0, 1))


def _slope(law: str, params: np.ndarray, n: float, step: float = 1e-4) -> float:
    """UA per label per class at ``n``, by a central difference over ``n`` ± ``step`` n."""
    low, high = predict(law, params, [n * (1 - step), n * (1 + step)])
    return float((high - low) / (2 * step * n))


def clips_at_random(class_counts: dict[str, int], per_class: float, draws: int = 400, seed: int = 0
                    ) -> tuple[float, float, float]:  # fmt: skip
    """How many clips a team labelling at random from a pool with ``class_counts`` must annotate before every class
    has ``per_class`` labels: the median and 95% range over ``draws`` random orders of the pool (inf where a class
    has fewer clips than that)."""
    counts = np.array(list(class_counts.values()), dtype=np.int64)
    if not math.isfinite(per_class) or (counts < math.ceil(per_class)).any():
        return math.inf, math.inf, math.inf
    k = math.ceil(per_class)
    if k <= 0:
        return 0.0, 0.0, 0.0
    labels = np.repeat(np.arange(len(counts)), counts)
    rng = np.random.default_rng(seed)
    needed = np.empty(draws)
    for i in range(draws):
        order = rng.permutation(labels)
        needed[i] = max(np.flatnonzero(order == c)[k - 1] for c in range(len(counts))) + 1
    low, median, high = np.percentile(needed, [2.5, 50, 97.5])
    return float(median), float(low), float(high)


def class_needs(results: pd.DataFrame, features: str, head: str, classes: list[str]) -> pd.DataFrame:
    """Per class: recall at the largest balanced size and its gain per doubling of the budget (log-law slope)."""
    runs = curve_runs(results, features, head, balanced=True)
    rows = []
    for name in classes:
        means = runs.groupby("size")[recall_column(name)].mean()
        n = np.array([size.value for size in means.index])
        slope = np.polyfit(np.log(n), means.to_numpy(), 1)[0] * math.log(2) if len(n) >= 2 else float("nan")
        rows.append({"class": name, "recall": float(means.iloc[-1]), "gain_per_doubling": float(slope)})
    table = pd.DataFrame(rows)
    # Most in need: low recall that labels still improve.
    table["priority"] = (1 - table["recall"]) * table["gain_per_doubling"].clip(lower=0)
    return table.sort_values("priority", ascending=False).reset_index(drop=True)


def confusion_at(results: pd.DataFrame, features: str, head: str, size: Size) -> np.ndarray:
    """Summed confusion matrix over the runs of one size, normalised by row (true class)."""
    runs = curve_runs(results, features, head, size=size)
    total = sum(np.array(json.loads(c)) for c in runs["confusion"])
    return total / np.maximum(total.sum(axis=1, keepdims=True), 1)



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
