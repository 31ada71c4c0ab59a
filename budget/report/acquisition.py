"""The report of an acquisition study: which clips to label, and how many, for this encoder and head on this corpus.

It opens with the advice (does choosing clips beat labelling at random,
corrected for the strategies compared), then the clips each strategy needs to
reach a ladder of targets against random's, with paired intervals and, given
annotation costs, hours and money; what labels per class would cost in clips
drawn at random from the pool's mix; the figure of every strategy's curve in
clips; UA per strategy and size; the paired comparison at every size; each
strategy's fitted law; and the provenance.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from budget import files
from budget.analysis import fit_curve
from budget.analysis.acquisition import (
    FAMILY_LEVEL,
    advice,
    overall,
    savings,
    strategy_summary,
    strategy_view,
    versus_random,
)
from budget.analysis.planning import clips_at_random
from budget.engine.config import TrainConfig
from budget.plots import strategy_plot
from budget.registry import describe_training
from budget.report.document import Costs, Document, provenance_section, write
from budget.runfolder import FinishedStudy
from budget.strategies import STRATEGIES


def acquisition_report(folder: FinishedStudy, out: Path, target: float | None, costs: Costs) -> Path:
    """Write an acquisition study's ``report.md``, ``report.html`` and figure into ``out``; the HTML's path."""
    results, show, provenance = folder.results, folder.display, folder.provenance
    figures = files.make_folder(out / "figures")  # before any work: a folder the disk refuses is one error
    summary = strategy_summary(results)
    full = results[[size.full for size in results["size"]]]
    pool_clips = float(full["n_train"].mean()) if len(full) else float(results["n_train"].max())
    found = savings(results, pool_clips, [target] if target is not None else None)
    overalls = overall(results)
    doc = Document(f"Annotation strategy report: {folder.path.name}")

    doc.heading("What was run")
    pools = provenance.get("pool_class_counts", {})
    sizes = sorted(results["size"].unique())
    doc.items([
        f"corpus: {provenance.get('corpus', '?')}, {provenance.get('utterances', '?')} utterances, classes "
        f"{', '.join(folder.classes)}",
        f"pool: each held-out fold's training speakers, unlabelled: {_pool_mix(pools)}",
        f"cross-validation: {results['fold'].nunique()} speaker-independent folds; seeds: {results['seed'].nunique()}",
        f"features: {', '.join(show(f) for f in dict.fromkeys(results['features']))}; heads: "
        f"{', '.join(dict.fromkeys(results['head']))}",
        f"strategies: {', '.join(_strategy_name(s) for s in dict.fromkeys(results['strategy']))}",
        f"sizes in clips annotated: {', '.join(str(s) for s in sizes)} (the first is the seed set: one clip of each class, "
        "the rest at random, the same for every strategy of a fold and seed; full: the whole pool)",
        "training: " + describe_training(TrainConfig.recorded(folder.train), dict.fromkeys(results["head"]))
        + "; retrained on the labelled clips after every round",
        f"{len(results)} rounds",
    ])  # fmt: skip

    doc.heading("Advice")
    doc.items(advice(overalls, found, show))
    doc.text(f"Each strategy against labelling at random: UA points above random's, averaged over the sizes between the "
             f"seed set and the whole pool, paired by fold and seed; the interval is {100 * FAMILY_LEVEL:.0f}% for the "
             "strategies together (each at 1 - 0.05 / strategies compared), so a strategy is not called better by the "
             "chance of many comparisons. The balanced oracle chooses clips by their labels, which no team has before "
             "annotating: it is shown as the bound it is, never advised.")  # fmt: skip
    doc.table(pd.DataFrame([{
        "features": show(o.features), "head": o.head, "strategy": o.strategy, "vs random, UA points": f"{o.points:+.1f}",
        "interval": f"{o.low:+.1f} to {o.high:+.1f} ({100 * o.level:.2f}%)",
        "": "better" if o.better else "worse" if o.worse else "not distinguishable from random",
    } for o in overalls]))  # fmt: skip

    if found:
        _clips_section(doc, found, costs, show)
        _labels_at_random(doc, results, summary, found, pools, costs, show)

    doc.figure(strategy_plot(summary, figures, show), "UA against clips annotated, every strategy")
    doc.heading("Unweighted accuracy")
    doc.text("Mean UA over held-out folds and seeds, with its 95% interval (folds, then seeds, resampled).")
    doc.table(pd.DataFrame({
        "features": summary["features"].map(show), "head": summary["head"], "strategy": summary["strategy"],
        "clips": summary["size"].map(str), "UA": summary["mean"].map("{:.3f}".format),
        "95% CI": [f"{lo:.3f} to {hi:.3f}" for lo, hi in zip(summary["ci_low"], summary["ci_high"], strict=True)],
        "runs": summary["runs"],
    }))  # fmt: skip
    paired = versus_random(results)
    if not paired.empty:
        doc.heading("Against random, size by size")
        doc.text("Each strategy's UA minus random's at each size, paired by fold and seed (95% intervals, each on its "
                 "own: read the advice for the comparison corrected for many).")  # fmt: skip
        doc.table(pd.DataFrame({
            "features": paired["features"].map(show), "head": paired["head"], "strategy": paired["strategy"],
            "clips": paired["size"].map(str), "points": paired["points"].map("{:+.1f}".format),
            "95% CI": [f"{lo:+.1f} to {hi:+.1f}" for lo, hi in zip(paired["low"], paired["high"], strict=True)],
            "higher in": [f"{w} of {n}" for w, n in zip(paired["wins"], paired["runs"], strict=True)],
        }))  # fmt: skip
    _laws(doc, results, show)
    provenance_section(doc, provenance, folder.path / "results.parquet")
    return write(doc, out)


def _clips_section(doc: Document, found: list, costs: Costs, show) -> None:
    """Per curve and target: the clips random needs and, per strategy, the clips it needs and those it saves."""
    doc.heading("Clips to reach a target")
    doc.text("Clips each strategy needs to reach each UA, read off its mean curve (interpolated in log clips between the "
             "measured sizes), and in brackets the clips it saves against labelling at random with the 95% interval "
             "of that saving, from resampling folds, then seeds, the same for both (∞ where, in some resamples, one of "
             "them does not reach the target within the pool); * marks a saving whose interval excludes zero, which "
             "alone, one of many, is no advice (see above)."
             + (f" Random's cost at {costs.seconds_per_label:g} annotator seconds a clip"
                + (f" and {costs.cost_per_hour:g} an hour" if costs.cost_per_hour else "") + "."
                if costs.seconds_per_label is not None else ""))  # fmt: skip
    rows = {}
    for saving in found:
        row = rows.setdefault((saving.features, saving.head, saving.target), {
            "features": show(saving.features), "head": saving.head, "target UA": f"{saving.target:.2f}",
            "random": _clips(saving.random_clips),
            **({"random's cost": costs.short(saving.random_clips)} if costs.seconds_per_label is not None else {})})  # fmt: skip
        saved = f" ({saving.saved:+.0f}: {_end(saving.low)} to {_end(saving.high)})" if math.isfinite(saving.saved) else ""
        row[saving.strategy] = _clips(saving.clips) + saved + (" *" if saving.distinguishable else "")
    if costs.seconds_per_label is not None:  # the cheapest strategy a team could run, beside random's cost
        for key, row in rows.items():
            chosen = [s for s in found if (s.features, s.head, s.target) == key and not STRATEGIES[s.strategy].oracle]
            fewest = min(chosen, key=lambda s: s.clips, default=None)
            if fewest is not None and math.isfinite(fewest.clips):
                row["fewest clips' cost"] = f"{fewest.strategy}: {costs.short(fewest.clips)}"
    doc.table(pd.DataFrame(list(rows.values())))


def _labels_at_random(doc: Document, results: pd.DataFrame, summary: pd.DataFrame, found: list, pools: dict,
                      costs: Costs, show) -> None:  # fmt: skip
    """What labels per class cost in clips: the balanced oracle's labels per class for each target, the clips a team
    labelling at random must annotate to get them at the pool's mix, and what the random arm measured."""
    if "balanced" not in set(results["strategy"]) or not pools:
        return
    n_classes = len(next(iter(pools.values())))
    mix = {name: int(np.median([fold[name] for fold in pools.values()])) for name in next(iter(pools.values()))}
    rows = []
    for saving in (s for s in found if s.strategy == "balanced" and math.isfinite(s.clips)):
        per_class = saving.clips / n_classes
        median, low, high = clips_at_random(mix, per_class)
        rows.append({"features": show(saving.features), "head": saving.head, "target UA": f"{saving.target:.2f}",
                     "labels per class (chosen by class)": f"{math.ceil(per_class)}",
                     "clips at random for them": f"{_clips(median)} ({_clips(low)} to {_clips(high)})",
                     "clips random measured": _clips(saving.random_clips),
                     **({"cost of those at random": costs.short(median)} if costs.seconds_per_label is not None else {})})  # fmt: skip
    if not rows:
        return
    doc.heading("Labels per class, in clips")
    doc.text("A budget curve answers in labels per class, which a team gets only by picking clips by their label (the "
             "balanced oracle here). Drawing clips at random from a pool at its own class mix, a team annotates more "
             "clips to collect that many of every class (median and 95% of random orders of the median fold's pool: "
             f"{_mix_text(mix)}); the random arm measures what random labelling needs to reach the target directly, "
             "often fewer.")  # fmt: skip
    doc.table(pd.DataFrame(rows))


def _laws(doc: Document, results: pd.DataFrame, show) -> None:
    """Each strategy's learning law in clips, chosen by backtest as a curve's is."""
    rows = []
    for features, head in results[["features", "head"]].drop_duplicates().itertuples(index=False):
        view = strategy_view(results, features, head)
        if len({size for size in view["size"] if size.balanced}) < 2:
            continue
        for name in dict.fromkeys(view["head"]):
            fit = fit_curve(view, features, name, n_boot=50)
            chosen = fit.chosen_fit if fit.chosen else None
            rows.append({"features": show(features), "head": head, "strategy": name, "law": fit.chosen or "none",
                         "backtest error, points": f"{100 * chosen.backtest_error:.2f}" if chosen else "-",
                         "R²": f"{chosen.r2:.3f}" if chosen else "-", "flags": "; ".join(fit.flags)})  # fmt: skip
    if rows:
        doc.heading("Fitted laws in clips")
        doc.text("Each strategy's mean UA against clips (the balanced sizes below the whole pool), fitted and chosen by "
                 "backtest as a budget curve is: the law that predicts its largest sizes best from the smaller ones.")
        doc.table(pd.DataFrame(rows))


def _strategy_name(name: str) -> str:
    return f"{name} (an oracle: it reads the labels)" if STRATEGIES[name].oracle else name


def _pool_mix(pools: dict) -> str:
    if not pools:
        return "class counts not recorded"
    sizes = [sum(fold.values()) for fold in pools.values()]
    return f"{min(sizes)} to {max(sizes)} clips a fold, e.g. {_mix_text(next(iter(pools.values())))}"


def _mix_text(mix: dict) -> str:
    total = sum(mix.values())
    return ", ".join(f"{name} {count} ({100 * count / total:.0f}%)" for name, count in mix.items())


def _clips(value: float) -> str:
    return f"{value:,.0f}" if math.isfinite(value) else "not reached within the pool"


def _end(value: float) -> str:
    """An end of a clips-saved interval: infinite where some resamples of one strategy never reach the target."""
    if not math.isfinite(value):
        return "+∞" if value > 0 else "−∞"
    return f"{value:+.1f}" if abs(value) < 10 else f"{value:+.0f}"


__all__ = ["acquisition_report"]
