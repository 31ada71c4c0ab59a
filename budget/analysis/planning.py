"""From fitted curves to decisions: labels needed for a target UA, with intervals, per class, and a recommendation.

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
from dataclasses import dataclass

import numpy as np
import pandas as pd

from budget.analysis.intervals import paired_difference
from budget.analysis.laws import EXTRAPOLATION_LIMIT, FAMILIES, PLAUSIBLE_LIMIT, CurveFit, fit_curve, predict, solve_n
from budget.errors import BudgetError
from budget.metrics import recall_column, result_classes
from budget.results import CURVE_KEYS
from budget.sampling import is_balanced, size_value


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


def measured_costs(results: pd.DataFrame, extraction: dict[str, float | None] | None = None) -> pd.DataFrame:
    """Per (features, head, size): measured training seconds per training utterance (each run's seconds over its
    training examples, averaged) and extraction seconds per utterance (what the store recorded, NaN where not)."""
    per_run = results.assign(train_per_utterance=results["train_seconds"] / results["n_train"].clip(lower=1))
    table = per_run.groupby([*CURVE_KEYS, "size"], sort=False)["train_per_utterance"].mean().reset_index()
    known = {name: math.nan if value is None else float(value) for name, value in (extraction or {}).items()}
    # an audio + text pair costs both extractions
    table["extract_per_utterance"] = [sum(known.get(part, math.nan) for part in features.split("+")) if features not in known
                                      else known[features] for features in table["features"]]  # fmt: skip
    return table


def against_best(results: pd.DataFrame, table: pd.DataFrame, costs: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every configuration at the largest balanced size against the highest mean there, paired by (fold, seed)
    (:func:`budget.analysis.paired_difference`), with its measured costs; the best first, then by mean UA.

    ``points``, ``low`` and ``high`` are the difference and its 95% interval in UA points (NaN on the best's row).
    """
    columns = ["features", "head", "size", "mean", "points", "low", "high", "wins", "runs", "distinguishable",
               "train_per_utterance", "extract_per_utterance"]  # fmt: skip
    balanced = table[is_balanced(table["size"])]
    if balanced.empty:
        return pd.DataFrame(columns=columns)
    size = max(balanced["size"], key=size_value)
    at = balanced[balanced["size"] == size].sort_values("mean", ascending=False, kind="stable")
    top = (at.iloc[0]["features"], at.iloc[0]["head"])
    rows = []
    for _, row in at.iterrows():
        configuration = (row["features"], row["head"])
        difference = None if configuration == top else paired_difference(results, configuration, top, size)
        extract, train = _costs(costs, configuration, size)
        measured = [math.nan] * 4 + [None] if difference is None else [
            difference.points, difference.low, difference.high, difference.wins, difference.distinguishable]
        rows.append([row["features"], row["head"], size, row["mean"], *measured[:4],
                     difference.runs if difference else int(row["runs"]), measured[4], train, extract])  # fmt: skip
    return pd.DataFrame(rows, columns=columns)


def seconds_text(seconds: float) -> str:
    """Seconds per utterance as a person reads them: ms below a second."""
    if not math.isfinite(seconds):
        return "not recorded"
    return f"{1000 * seconds:.2g} ms" if seconds < 0.1 else f"{1000 * seconds:.0f} ms" if seconds < 1 else f"{seconds:.3g} s"


def _costs(costs: pd.DataFrame | None, configuration: tuple[str, str], size: str) -> tuple[float, float]:
    """A configuration's (extraction, training) seconds per utterance at ``size``; NaN where not measured."""
    if costs is None:
        return math.nan, math.nan
    row = costs[(costs["features"] == configuration[0]) & (costs["head"] == configuration[1]) & (costs["size"] == size)]
    if row.empty:
        return math.nan, math.nan
    return float(row["extract_per_utterance"].iloc[0]), float(row["train_per_utterance"].iloc[0])


def _cost_text(cost: tuple[float, float]) -> str:
    extract, train = cost
    training = f"{seconds_text(train)} of training per utterance"
    return training if not math.isfinite(extract) else f"{seconds_text(extract)} of extraction and {training}"


def recommend(table: pd.DataFrame, needed: pd.DataFrame, target: float | None = None, results: pd.DataFrame | None = None,
              costs: pd.DataFrame | None = None) -> str:  # fmt: skip
    """One sentence naming the configuration to choose, and why.

    With a target: the curve that reaches it with the fewest labels, against
    the next best.  Without: the highest measured UA at the largest balanced
    size, against the next best.  Given the ``results``, each comparison is
    paired (:func:`budget.analysis.paired_difference`); without a target,
    configurations not distinguishable from the highest mean count as equals,
    and the cheapest of them by :func:`measured_costs` is the one recommended
    (smaller encoder first, then cheaper head; costs within a factor of
    :data:`COST_RESOLUTION` are equal).
    """
    from budget.features import display_name

    def name(configuration) -> str:
        return f"{display_name(configuration[0])} + {configuration[1]}"

    if target is not None:
        reaching = needed[(needed["target"] == round(target, 4)) & needed["per_class"].notna()].sort_values("per_class")
        if reaching.empty:
            return (f"No configuration reaches UA {target:.2f} within {PLAUSIBLE_LIMIT}x the measured sizes; "
                    "measure a larger size first (the plan below names it).")  # fmt: skip
        best = reaching.iloc[0]
        first = (best["features"], best["head"])
        sentence = (f"Recommended for UA {target:.2f}: {name(first)}, about {best['per_class']:.0f} labels per class "
                    f"({best['total']:.0f} in total; {best['status']})")  # fmt: skip
        if len(reaching) > 1:
            runner_up = reaching.iloc[1]
            second = (runner_up["features"], runner_up["head"])
            sentence += (f"; the next best, {name(second)}, needs {runner_up['per_class']:.0f} per class, "
                         f"{runner_up['per_class'] / best['per_class']:.1f} times as many labels")  # fmt: skip
            if results is not None and (measured := _largest_shared(table, [first, second])) is not None:
                difference = paired_difference(results, first, second, measured)
                if difference is not None:
                    sentence += (f". Measured at {measured} per class, {name(first)} minus {name(second)} is "
                                 f"{difference.describe()}")  # fmt: skip
                    if not difference.distinguishable:
                        sentence += ": not distinguishable there, so the gap in labels rests on the fitted curves"
        return sentence + "."
    balanced = table[is_balanced(table["size"])]
    at_largest = balanced[balanced["n_per_class"] == balanced.groupby(["features", "head"])["n_per_class"].transform("max")]
    ranked = at_largest.sort_values("mean", ascending=False)
    best = ranked.iloc[0]
    top = (best["features"], best["head"])

    def measured(row) -> str:
        return f"UA {row['mean']:.3f} (95% CI {row['ci_low']:.3f} to {row['ci_high']:.3f}) at {row['n_per_class']:g} labels per class"

    paired = against_best(results, table, costs) if results is not None else None
    if paired is None or len(paired) < 2:
        sentence = f"Recommended: {name(top)}, {measured(best)}, the highest measured"
        if len(ranked) > 1:
            sentence += f"; the next best, {name((ranked.iloc[1]['features'], ranked.iloc[1]['head']))}, reaches {ranked.iloc[1]['mean']:.3f} there"
        return sentence + "."

    def cell(configuration) -> pd.Series:
        return table[(table["features"] == configuration[0]) & (table["head"] == configuration[1]) & (table["size"] == size)].iloc[0]

    top, size = (paired["features"].iloc[0], paired["head"].iloc[0]), paired["size"].iloc[0]
    best = cell(top)
    equal = paired[paired["distinguishable"] != True]  # noqa: E712 (the best's own row holds None)
    cost = {(row.features, row.head): (row.extract_per_utterance, row.train_per_utterance) for row in equal.itertuples()}
    pick = _cheapest(list(cost), cost)
    if pick == top:
        runner_up = paired.iloc[1]
        second = (runner_up["features"], runner_up["head"])
        difference = paired_difference(results, top, second, size)
        sentence = (f"Recommended: {name(top)}, {measured(best)}, the highest measured; the next best, {name(second)}, "
                    f"reaches {runner_up['mean']:.3f} there ({name(top)} minus {name(second)}: {difference.describe()})")  # fmt: skip
        if not difference.distinguishable:
            sentence += (f": not distinguishable at this size, and {name(top)} is among the cheapest of the "
                         f"configurations it cannot be told from ({_cost_text(cost[top])})")  # fmt: skip
        return sentence + "."
    chosen = cell(pick)
    difference = paired_difference(results, top, pick, size)
    among = f"one of {len(cost) - 1} configurations" if len(cost) > 2 else "a configuration"
    return (f"Recommended: {name(pick)}, {measured(chosen)}: {among} not distinguishable from the highest mean there, "
            f"{name(top)}'s {best['mean']:.3f} ({name(top)} minus {name(pick)}: {difference.describe()}), and the "
            f"cheapest of them: {_cost_text(cost[pick])}, against {_cost_text(cost[top])}.")  # fmt: skip


#: Costs within this factor of the lowest count as equally cheap: measured seconds carry timing noise.
COST_RESOLUTION = 2.0


def _cheapest(equals: list[tuple[str, str]], cost: dict[tuple[str, str], tuple[float, float]]) -> tuple[str, str]:
    """Of configurations ranked by mean UA, the cheapest: those within :data:`COST_RESOLUTION` of the lowest
    extraction cost (a smaller encoder), then of the lowest training cost (a fitted or smaller head), and of
    them the highest mean.  A cost not measured for every configuration is not compared."""
    candidates = list(equals)
    for part in (0, 1):
        values = [cost[c][part] for c in candidates]
        if all(math.isfinite(v) for v in values):
            lowest = min(values)
            candidates = [c for c in candidates if cost[c][part] <= COST_RESOLUTION * lowest]
    return candidates[0]


def _largest_shared(table: pd.DataFrame, configurations: list[tuple[str, str]]) -> str | None:
    """The largest balanced size every configuration measured."""
    sizes = None
    for features, head in configurations:
        own = set(table[(table["features"] == features) & (table["head"] == head) & is_balanced(table["size"])]["size"])
        sizes = own if sizes is None else sizes & own
    return max(sizes, key=size_value) if sizes else None
