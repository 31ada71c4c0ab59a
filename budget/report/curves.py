"""The report of a budget curve or compare study: ``report.md`` and a self-contained ``report.html``.

(One file: the curve report's sections, in the order a reader meets them.)

It states what was run, the answer first (the configuration to choose and the
labels a ladder of targets needs), the UA table with intervals, the paired
comparisons, the figures, the fitted laws, the plan for a target (when one is
given) and the provenance.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pandas as pd
from scipy import stats

from budget import files
from budget.analysis import (
    BUDGETS,
    CONVERGENCE_TOLERANCE,
    FAMILIES,
    FEW_FOLDS,
    PLAUSIBLE_LIMIT,
    Plan,
    against_best,
    aggregate,
    backtest_depth,
    cell_budgets,
    convergence_table,
    feature_gains,
    fit_curve,
    labels_needed,
    measured_costs,
    paired_difference,
    plan,
    recommendation,
    seconds_text,
    target_ladder,
)
from budget.engine.config import TrainConfig
from budget.features import display_name
from budget.metrics import recall_column, result_classes
from budget.plots import compare_plot, confusion_plot, curve_plot, layer_plot, layer_weights_plot, recall_plot
from budget.registry import describe_training
from budget.report.document import Costs, Document, provenance_section, write
from budget.results import layer_weights, sort_results
from budget.runfolder import FinishedStudy


def plan_lines(result: Plan, costs: Costs, show: Callable[[str], str] = display_name) -> list[str]:
    """A plan in plain sentences (``show`` names feature sets for a reader)."""
    low, high = result.ua_next_step[1:]
    lines = [
        result.statement(show),
        f"measured up to {result.largest_measured:g} per class, UA {result.ua_at_largest:.3f}; at {result.next_step:g} "
        f"per class the fitted law expects {result.ua_next_step[0]:.3f} (95% interval {low:.3f} to {high:.3f})",
        _backtest_line(result),
        f"at {result.largest_measured:g} per class, 100 more labels (spread over the classes) add about "
        f"{100 * result.marginal_per_100:.2f} UA points",
    ]
    if result.clips_at_random is not None and result.per_class <= PLAUSIBLE_LIMIT * result.largest_measured:
        median, low, high = result.clips_at_random
        if not math.isfinite(median):
            lines.append(f"the corpus holds fewer than {math.ceil(result.per_class)} clips of some class: labelling "
                         "all of it would not give that many of every class")  # fmt: skip
        at_random = (f"{math.ceil(result.per_class)} labels of every class come with about {median:,.0f} clips labelled "
                     f"at random from a pool at this corpus's class mix (95% of random orders: {low:,.0f} to "
                     f"{high:,.0f}), against {math.ceil(result.per_class) * result.n_classes:,} chosen by class")  # fmt: skip
        cost = costs.describe(median)
        if math.isfinite(median):
            lines.append(at_random + (f"; {cost}" if cost else ""))
    if result.largest_measured < result.per_class < math.inf:
        total = math.ceil(result.per_class) * result.n_classes
        extra = max(0, total - result.largest_measured * result.n_classes)
        cost = costs.describe(extra)
        if cost:
            lines.append(f"beyond the {result.largest_measured * result.n_classes:g} measured, {cost}")
        if cost and result.beyond_limit:
            next_round = (result.next_step - result.largest_measured) * result.n_classes
            lines.append(f"the next round, up to {result.next_step:g} per class: {costs.describe(next_round)}")
    needs = result.class_needs.head(3)
    ranked = ", ".join(f"{r['class']} (recall {r.recall:.2f}, {100 * r.gain_per_doubling:+.1f} pts per doubling)" for _, r in needs.iterrows())
    lines.append(f"classes that most need labels: {ranked}")
    lines += [f"note: {note}" for note in result.notes]
    return lines


def _labels_needed_section(doc, results: pd.DataFrame, table: pd.DataFrame, fits: list, target: float | None,
                           costs: pd.DataFrame, show: Callable[[str], str]) -> None:  # fmt: skip
    """The answer first: the configuration to choose, and the labels a ladder of targets needs on every curve."""
    doc.heading("Labels needed")
    fitted = [fit for fit in fits if fit.chosen]
    ladder = target_ladder(table, fitted, target) if fitted else []
    needed = labels_needed(results, fitted, ladder) if ladder else pd.DataFrame()
    doc.text(recommendation(results, table, fits, target, costs, show))
    if not fitted:
        doc.text("No curve could be fitted (it needs at least two balanced sizes), so no count beyond the measured "
                 "sizes can be given.")  # fmt: skip
        return
    if needed.empty:
        doc.text(f"The best measured UA, {table['mean'].max():.3f}, is at or above every fitted ceiling: more labels "
                 "of these kinds are not expected to raise it.")  # fmt: skip
        return
    doc.text("Labels per class (and in total) each curve needs to reach each UA, from its fitted law; 95% intervals "
             "are at least as wide as the law's backtest error. Interpolated: within the measured sizes; extrapolated: "
             f"beyond them (by the factor shown); beyond {PLAUSIBLE_LIMIT}x the largest measured size no count is "
             "given, only the size to measure next.")  # fmt: skip

    def answer(row) -> str:
        if row.status == "not reached":
            return f"not reached (ceiling {row.ceiling:.3f})" if row.ceiling is not None else "not reached"
        if row.status == "too far":
            return f"beyond {PLAUSIBLE_LIMIT}x the measured sizes: measure {row.next_size:g} per class next"
        high = f"{row.high:.0f}" if not math.isnan(row.high) else f"beyond {PLAUSIBLE_LIMIT}x"
        how = "interpolated" if row.status == "interpolated" else f"extrapolated {row.factor:.1f}x"
        return f"{row.per_class:.0f} per class ({row.total:.0f} in total), 95% {row.low:.0f} to {high}; {how}"

    columns = {f"UA {100 * t:.0f}%": [answer(r) for r in needed[needed["target"] == t].itertuples()] for t in ladder}
    names = needed.drop_duplicates(["features", "head"])
    doc.table(pd.DataFrame({"features": names["features"].map(show).to_numpy(),
                            "head": names["head"].to_numpy(), **columns}))  # fmt: skip


def _backtest_line(result: Plan) -> str:
    if math.isnan(result.backtest_error):
        return f"the {result.law} law could not be backtested (too few sizes): the intervals are the bootstrap's alone"
    return (
        f"backtest error of the {result.law} law: {100 * result.backtest_error:.2f} UA points (its error "
        "predicting the largest measured sizes from the smaller ones); the intervals here are widened by it"
    )


def _folds_lacking(results: pd.DataFrame) -> str:
    """Which held-out folds lack which class, read from the recalls that are NaN; empty when none does."""
    lacking = {}
    for name in result_classes(results):
        for fold in sorted(results.loc[results[recall_column(name)].isna(), "fold_name"].unique()):
            lacking.setdefault(fold, []).append(name)
    if not lacking:
        return ""
    return " (here " + ", ".join(f"{fold} has no {'/'.join(names)}" for fold, names in lacking.items()) + ")"


def _few_folds(results: pd.DataFrame) -> str:
    """A sentence on intervals made wide by too few held-out folds; empty with :data:`FEW_FOLDS` or more."""
    folds = results["fold"].nunique()
    if folds >= FEW_FOLDS or folds < 2:
        return ""
    quantile = stats.t.ppf(0.975, folds - 1)
    return (f" This study has only {folds} held-out folds, so every interval is wide: on {folds} folds the 95% "
            f"interval is {quantile:.2f} standard errors either side of the mean (on 10 folds, "
            f"{stats.t.ppf(0.975, 9):.2f}); more speakers (groups) give more folds and narrower intervals.")  # fmt: skip


def _gains_section(doc, results: pd.DataFrame, show: Callable[[str], str]) -> None:
    """Each feature set's UA gain over the first (the paper's Table 1 comparison), paired by fold and seed."""
    gains = feature_gains(results)
    if gains.empty:
        return
    baseline = show(gains["baseline"].iloc[0])
    doc.heading(f"Gain over {baseline}")
    doc.text(f"UA of each feature set minus {baseline}'s, in points, for the same head, size, held-out fold and seed; "
             "intervals are 95%, from a bootstrap over folds and seeds of the paired differences.")  # fmt: skip
    doc.table(
        pd.DataFrame(
            {
                "head": gains["head"],
                "per class": gains["size"],
                "features": gains["features"].map(show),
                "gain, points": gains["gain_points"].map("{:+.1f}".format),
                "95% CI": [f"{lo:+.1f} to {hi:+.1f}" for lo, hi in zip(gains["ci_low"], gains["ci_high"], strict=True)],
                "higher in": [f"{w} of {n}" for w, n in zip(gains["wins"], gains["runs"], strict=True)],
            }
        )
    )


def _paired_section(doc, results: pd.DataFrame, table: pd.DataFrame, costs: pd.DataFrame, show: Callable[[str], str]) -> None:
    """Every configuration against the highest mean at the largest balanced size, paired run by run, with its cost."""
    paired = against_best(results, table, costs)
    if len(paired) < 2:
        return
    best = paired.iloc[0]
    doc.heading(f"Paired comparisons at {best['size']} per class")
    doc.text(f"Each configuration's UA minus the highest mean's ({show(best['features'])} + {best['head']}), in "
             "points, run by run: every run at one held-out fold and seed trains on the same subset whatever its "
             "features and head, so the difference is measured on the same data. Intervals are 95%, from the bootstrap "
             "over folds, then seeds, of the differences; an interval that holds 0 means the two are not "
             "distinguishable at this size, and the cheaper is the sensible pick. Costs are measured: training seconds "
             "per training utterance at this size, extraction seconds per utterance where the feature store recorded "
             "them.")  # fmt: skip
    doc.table(paired_rows(paired, show))


def _convergence_section(doc, folder: FinishedStudy, show: Callable[[str], str]) -> None:
    """The cells the convergence check trained on: each doubling of its budget, and the budget it needed."""
    steps = convergence_table(folder.results, folder.convergence)
    if steps.empty:
        return
    needed = cell_budgets(steps)
    doc.heading("Convergence check")
    doc.text(f"These cells were trained on to twice the optimiser budget, each run from where it ended (a stepped "
             "head: one more cycle of its schedule, from a fresh optimiser; a fitted head: fitted again with twice the "
             f"iterations), and a cell still learning on to twice that, up to {BUDGETS[-1]}x. A cell is still "
             "learning where its mean UA moves by "
             "more than 1 point and by more than two standard errors of the change (over held-out folds: a smaller "
             "move may be a stochastic head's seed noise). The results show each cell at the first budget whose "
             "doubling no longer moved it; a cell that still moved at the cap is shown at the cap, marked not "
             "converged: raise --steps.")  # fmt: skip
    doc.table(pd.DataFrame({
        "features": steps["features"].map(show), "head": steps["head"], "per class": steps["size"],
        "budget": [f"{b}x to {2 * b}x" for b in steps["budget"]],
        "UA": steps["ua_default"].map("{:.3f}".format), "UA, twice the budget": steps["ua_doubled"].map("{:.3f}".format),
        "change, points": [f"{change:+.1f} ± {se:.1f}" for change, se in
                           zip(steps["change_points"], steps["change_se_points"], strict=True)],
        "runs": steps["runs"], "": steps["flagged"].map({True: "still learning", False: ""}),
    }))  # fmt: skip
    items = [f"{show(row.features)} + {row.head} at {row.size} per class: "
             + (f"converged at {row.budget}x the budget" if row.converged else f"not converged at {row.budget}x, the cap")
             for row in needed.itertuples() if row.budget > 1 or not row.converged]  # fmt: skip
    last = steps.drop_duplicates(["features", "head", "size"], keep="last")
    items += [f"{show(row.features)} + {row.head} at {row.size} per class moved {row.change_points:+.1f} ± "
              f"{row.change_se_points:.1f} points from {row.budget}x to {2 * row.budget}x, within two standard errors: "
              "counted as converged; more seeds would tell noise from learning"
              for row in last[~last["flagged"] & (last["change_points"].abs() > 100 * CONVERGENCE_TOLERANCE)].itertuples()]
    doc.items(items or ["every checked cell was converged at the study's budget"])


def _budgets_text(results: pd.DataFrame, show: Callable[[str], str]) -> str:
    """What the training line adds for cells the convergence check trained at more than the study's budget."""
    if "budget" not in results or (results["budget"] == 1).all():
        return ""
    cells = results[results["budget"] > 1].drop_duplicates(["features", "head", "size"])
    return "; trained longer to converge: " + ", ".join(
        f"{show(row.features)} + {row.head} at {row.size} at {row.budget}x the budget" for row in cells.itertuples())


def paired_rows(paired: pd.DataFrame, show: Callable[[str], str] = display_name) -> pd.DataFrame:
    """:func:`budget.analysis.against_best`'s table as a reader sees it (the report and ``budget compare``)."""
    compared = paired["points"].notna()
    return pd.DataFrame({
        "features": paired["features"].map(show), "head": paired["head"], "UA": paired["mean"].map("{:.3f}".format),
        "vs best, points": [f"{p:+.1f}" if c else "-" for p, c in zip(paired["points"], compared, strict=True)],
        "95% CI": [f"{lo:+.1f} to {hi:+.1f}" if c else "-" for lo, hi, c in zip(paired["low"], paired["high"], compared, strict=True)],
        "higher in": [f"{w:.0f} of {n}" if c else "-" for w, n, c in zip(paired["wins"], paired["runs"], compared, strict=True)],
        "": [("distinguishable" if d else "not distinguishable") if c else "best" for d, c in zip(paired["distinguishable"], compared, strict=True)],
        "train per utterance": paired["train_per_utterance"].map(seconds_text),
        "extract per utterance": paired["extract_per_utterance"].map(seconds_text),
    })  # fmt: skip


def _layers_section(doc, results: pd.DataFrame, table: pd.DataFrame, sweeps: dict, figures: Path) -> None:
    """Per encoder stored whole: UA by layer and size, the best layer per size against the default one (paired), and
    the layer weights heads learned."""
    for stored, sweep in sweeps.items():
        layers = {name: index for name, index in sweep["layers"].items() if name in set(results["features"])}
        weighted, model = sweep.get("weighted"), stored.rpartition(":")[0]
        doc.heading(f"Layers of {display_name(model)}")
        if layers:
            doc.figure(layer_plot(table, layers, figures, model), "UA by layer and training size")
            default = sweep["default"]
            rows = []
            for (head, size), cells in table[table["features"].isin(layers)].groupby(["head", "size"], sort=False):
                best = cells.loc[cells["mean"].idxmax()]
                difference = paired_difference(results, (best["features"], head), (default, head), size)
                rows.append({
                    "head": head, "per class": size, "best layer": layers[best["features"]], "UA": f"{best['mean']:.3f}",
                    f"vs layer {default.rpartition(':')[2]}, paired": "-" if difference is None or best["features"] == default
                    else difference.describe(),
                })  # fmt: skip
            doc.text(f"The best layer per head and size, against the layer the encoder is read at by default "
                     f"({default.rpartition(':')[2]}), paired by fold and seed (95% intervals; "
                     f"'-' where the best is the default{'' if default in layers else ', or the default was not swept'}).")  # fmt: skip
            doc.table(pd.DataFrame(rows))
        learned = layer_weights(results)
        learned = learned[learned["features"] == weighted] if weighted else learned.iloc[:0]
        if not learned.empty:
            learned = learned.dropna(axis=1, how="all")
            columns = [c for c in learned.columns if c.startswith("layer")]
            doc.figure(layer_weights_plot(learned, figures, weighted), "Learned layer weights")
            means = learned.groupby(["head", "size"], sort=False)[columns].mean().reset_index()
            means = sort_results(means.assign(features=weighted)).drop(columns="features")
            doc.text("Softmax-normalised layer weights each run learned with its head (weighted), mean over runs: "
                     f"{1 / len(columns):.3f} each would be no preference.")  # fmt: skip
            doc.table(means.rename(columns={"size": "per class"}).assign(**{c: means[c].map("{:.3f}".format) for c in columns}))


def curve_report(folder: FinishedStudy, out: Path, target: float | None, costs: Costs) -> Path:
    """Write a curve or compare study's ``report.md``, ``report.html`` and figures into ``out``; the HTML's path."""
    results, show = folder.results, folder.display
    figures = files.make_folder(out / "figures")  # before any work: a folder the disk refuses is one error
    doc = Document(f"Label budget report: {folder.path.name}")
    config, provenance = folder.config, folder.provenance

    doc.heading("What was run")
    sizes = sorted(results["size"].unique())
    doc.items(
        [
            f"corpus: {provenance.get('corpus', config.get('corpus', '?'))}, {provenance.get('utterances', '?')} utterances, "
            f"classes {', '.join(folder.classes)}",
            f"cross-validation: {results['fold'].nunique()} speaker-independent folds "
            f"({', '.join(str(v) for v in provenance.get('folds', {}).values())})",
            f"features: {', '.join(dict.fromkeys(results['features']))}",
            f"heads: {', '.join(dict.fromkeys(results['head']))}",
            f"training sizes per class: {', '.join(map(str, sizes))}; seeds: {results['seed'].nunique()}",
            "training: " + describe_training(TrainConfig.recorded(folder.train), dict.fromkeys(results["head"]))
            + _budgets_text(results, show),
            f"{len(results)} runs",
        ]
    )

    table = aggregate(results)
    measured = measured_costs(results, provenance.get("extraction_seconds_per_utterance"))
    balanced_sizes = [size for size in sizes if size.balanced]
    fits = [fit_curve(results, f, h) for f, h in folder.curves()] if len(balanced_sizes) >= 2 else []
    _labels_needed_section(doc, results, table, fits, target, measured, show)

    doc.heading("Unweighted accuracy")
    doc.text("UA is the mean per-class recall on the held-out fold, over the classes the fold holds: a class a "
             "held-out speaker never expressed enters neither that fold's UA nor its macro-F1, and a class's "
             "recall is averaged over the folds that hold it" + _folds_lacking(results) + ". Intervals are 95%, "
             "from a bootstrap over held-out folds and seeds (not utterances), cut to [0, 1]." + _few_folds(results)
             + " Costs are measured: training seconds per training utterance of the cell's runs, extraction seconds "
             "per utterance where the feature store recorded them.")  # fmt: skip
    shown = pd.DataFrame(
        {
            "features": table["features"].map(show),
            "head": table["head"],
            "per class": table["size"],
            "training examples": table["n_train"].round().astype(int),
            "UA": table["mean"].map("{:.3f}".format),
            "± std": table["std"].map("{:.3f}".format),
            "95% CI": [f"{lo:.3f} to {hi:.3f}" for lo, hi in zip(table["ci_low"], table["ci_high"], strict=True)],
            "runs": table["runs"],
            **{f"{what} per utterance": [seconds_text(v) for v in table.merge(measured, how="left")[f"{what}_per_utterance"]]
               for what in ("train", "extract")},
        }
    )
    doc.table(shown)
    _paired_section(doc, results, table, measured, show)
    _gains_section(doc, results, show)
    if provenance.get("layer_sweeps"):
        _layers_section(doc, results, table, provenance["layer_sweeps"], figures)

    _convergence_section(doc, folder, show)

    if fits:
        n_classes = len(folder.classes) or None
        doc.figure(curve_plot(table, fits, figures, target, n_classes=n_classes, show=show),
                   "UA against training examples per class")  # fmt: skip
    if len(set(results["head"])) > 1 or (not fits and len(set(results["features"])) > 1):  # else the curve shows it all
        doc.figure(compare_plot(table, figures, show), "UA by head and feature set at the largest size")
    if len(balanced_sizes) >= 2:
        doc.figure(recall_plot(results, list(folder.curves()), figures, show), "Per-class recall, one panel per curve")
    best = table.loc[table["mean"].idxmax()]
    doc.figure(
        confusion_plot(results, best["features"], best["head"], best["size"], figures, show),
        f"Confusion matrix of the best cell ({show(best['features'])}, {best['head']}, {best['size']} per class)",
    )

    if fits:
        doc.heading("Fitted learning curves")
        doc.text(f"The laws {', '.join(FAMILIES)} are fitted to mean UA per balanced size by weighted least squares "
                 "(larger sizes weigh more): the power laws with three and four parameters, Morgan-Mercer-Flodin and "
                 "Weibull extrapolate best on the learning-curve database LCDB; the logarithmic law is the paper's. "
                 "Each law is backtested: fitted without the largest size (or two), it predicts them; its backtest "
                 "error is the mean absolute error of those predictions, in UA points. The law with the smallest "
                 "backtest error is used, unless it has a parameter on a bound (a ceiling of exactly 1, say) and a law "
                 "without one predicts as well. Sizes each law needs: "
                 + ", ".join(f"{law} {family.min_sizes}" for law, family in FAMILIES.items()) + ".")  # fmt: skip
        for fit in fits:
            lines = [lf.describe() for lf in fit.fits.values()]
            two = backtest_depth(len(fit.n)) == 2
            lines.append("backtest: each law predicts the largest size from the smaller ones"
                         + (", and the two largest from the rest" if two else ""))  # fmt: skip
            lines.append(f"chosen: {fit.chosen or 'none'}" + (f": {fit.reason}" if fit.reason else ""))
            lines += [f"warning: {flag}" for flag in fit.flags]
            doc.text(f"{show(fit.features)} · {fit.head}")
            doc.items(lines)

    if target is not None and fits:
        doc.heading(f"Plan for UA {target:.2f}")
        for fit in fits:
            if fit.chosen is None:
                doc.items([f"{fit.features} + {fit.head}: " + "; ".join(fit.flags)])
                continue
            doc.items(plan_lines(plan(results, target, fit.features, fit.head, fit, provenance.get("class_counts")),
                                 costs, show))  # fmt: skip

    provenance_section(doc, provenance, folder.path / "results.parquet")
    return write(doc, out)
