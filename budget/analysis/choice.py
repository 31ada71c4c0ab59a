"""Choosing among configurations: each against the best, paired run by run, with what it costs, and the one
sentence that recommends one (the report opens with it, ``budget compare`` ends with it).

Configurations not distinguishable from the highest mean (paired 95% interval, fold-then-seed bootstrap)
count as equals, and the cheapest of them by measured cost is recommended: a smaller encoder first, then a
cheaper head.  With a target UA, the configuration whose fitted curve reaches it with the fewest labels.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pandas as pd

from budget.analysis.intervals import paired_difference
from budget.analysis.laws import PLAUSIBLE_LIMIT, CurveFit
from budget.analysis.planning import labels_needed
from budget.features import display_name
from budget.results import CURVE_KEYS, balanced_rows, curve_runs
from budget.sampling import Size


def measured_costs(results: pd.DataFrame, extraction: dict[str, float | None] | None = None) -> pd.DataFrame:
    """Per (features, head, size): measured training seconds per training utterance (each run's seconds over its
    training examples, averaged) and extraction seconds per utterance, by feature set as the study recorded them
    (an audio + text pair's is both of its extractions; NaN where not recorded)."""
    per_run = results.assign(train_per_utterance=results["train_seconds"] / results["n_train"].clip(lower=1))
    table = per_run.groupby([*CURVE_KEYS, "size"], sort=False)["train_per_utterance"].mean().reset_index()
    known = {name: math.nan if value is None else float(value) for name, value in (extraction or {}).items()}
    table["extract_per_utterance"] = [known.get(features, math.nan) for features in table["features"]]
    return table


def against_best(results: pd.DataFrame, table: pd.DataFrame, costs: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every configuration at the largest balanced size against the highest mean there, paired by (fold, seed)
    (:func:`budget.analysis.paired_difference`), with its measured costs; the best first, then by mean UA.

    ``points``, ``low`` and ``high`` are the difference and its 95% interval in UA points (NaN on the best's row).
    """
    columns = ["features", "head", "size", "mean", "points", "low", "high", "wins", "runs", "distinguishable",
               "train_per_utterance", "extract_per_utterance"]  # fmt: skip
    balanced = table[balanced_rows(table)]
    if balanced.empty:
        return pd.DataFrame(columns=columns)
    size = max(balanced["size"])
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


def _costs(costs: pd.DataFrame | None, configuration: tuple[str, str], size: Size) -> tuple[float, float]:
    """A configuration's (extraction, training) seconds per utterance at ``size``; NaN where not measured."""
    if costs is None:
        return math.nan, math.nan
    row = curve_runs(costs, *configuration, size=size)
    if row.empty:
        return math.nan, math.nan
    return float(row["extract_per_utterance"].iloc[0]), float(row["train_per_utterance"].iloc[0])


def _cost_text(cost: tuple[float, float]) -> str:
    extract, train = cost
    training = f"{seconds_text(train)} of training per utterance"
    return training if not math.isfinite(extract) else f"{seconds_text(extract)} of extraction and {training}"


def recommend(table: pd.DataFrame, needed: pd.DataFrame, target: float | None = None, results: pd.DataFrame | None = None,
              costs: pd.DataFrame | None = None, show: Callable[[str], str] = display_name) -> str:  # fmt: skip
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
    def name(configuration) -> str:
        return f"{show(configuration[0])} + {configuration[1]}"

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
    balanced = table[balanced_rows(table)]
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
        return curve_runs(table, *configuration, size=size).iloc[0]

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


def recommendation(results: pd.DataFrame, table: pd.DataFrame, curves: list[CurveFit], target: float | None = None,
                   costs: pd.DataFrame | None = None, show: Callable[[str], str] = display_name) -> str:  # fmt: skip
    """The configuration to choose, in one sentence (:func:`recommend`): with a ``target`` that a fitted curve can
    answer, the one that needs the fewest labels; else the best measured, paired run by run and cost-aware.  The
    report opens with it, ``budget compare`` ends with it, :meth:`budget.StudyResult.recommendation` returns it.

    ``table`` is :func:`budget.analysis.aggregate`'s summary of ``results``, ``curves`` their fitted curves.
    """
    fitted = [curve for curve in curves if curve.chosen]
    needed = labels_needed(results, fitted, [target]) if target is not None and fitted else pd.DataFrame()
    return recommend(table, needed, target if not needed.empty else None, results, costs, show)


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


def _largest_shared(table: pd.DataFrame, configurations: list[tuple[str, str]]) -> Size | None:
    """The largest balanced size every configuration measured."""
    sizes = None
    for configuration in configurations:
        own = set(curve_runs(table, *configuration, balanced=True)["size"])
        sizes = own if sizes is None else sizes & own
    return max(sizes) if sizes else None
