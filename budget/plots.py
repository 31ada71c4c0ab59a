"""Figures for reports: budget curves, the compare table, per-class recall, confusion matrices.

Made to be read at report size and printed in greyscale: every series has its
own line style and marker as well as its colour (the Okabe-Ito palette, safe
for colour-blind readers), bars carry hatching, axes are labelled with units,
and legends sit outside the data.  Each figure is saved as PNG and SVG.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the non-interactive backend)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter, PercentFormatter  # noqa: E402

from budget import files  # noqa: E402
from budget.analysis import CurveFit, confusion_at, solve_n  # noqa: E402
from budget.analysis.laws import EXTRAPOLATION_LIMIT, FAMILIES, PLAUSIBLE_LIMIT  # noqa: E402
from budget.features import display_name  # noqa: E402
from budget.metrics import recall_column, result_classes  # noqa: E402
from budget.results import balanced_rows, curve_runs  # noqa: E402
from budget.sampling import Size  # noqa: E402
from budget.strategies import BASELINE, STRATEGIES  # noqa: E402

PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
LINESTYLES = ["-", "--", "-.", ":"]
HATCHES = ["", "//", "..", "xx", "\\\\", "++"]
EXTRAPOLATED = (0, (4, 3))

plt.rcParams.update(
    {
        "figure.dpi": 110,
        "savefig.dpi": 110,
        "font.size": 9,
        "axes.titlesize": 10,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.grid": True,
        "grid.alpha": 0.3,
        "svg.fonttype": "none",
        "svg.hashsalt": "budget",  # element ids from a fixed salt: the same figure gives the same file
    }
)


def _save(figure, folder: Path, name: str) -> Path:
    """The figure as SVG and PNG in ``folder``, each written whole or not at all."""
    files.make_folder(folder)
    try:
        for suffix in ("svg", "png"):
            files.write_atomically(folder / f"{name}.{suffix}", lambda tmp, s=suffix: figure.savefig(
                tmp, format=s, bbox_inches="tight", metadata={"Date": None} if s == "svg" else None))  # no date: reproducible
    finally:
        plt.close(figure)
    return folder / f"{name}.png"


def _label(features: str, head: str, show: Callable[[str], str] = display_name) -> str:
    return f"{show(features)} · {head}"


def _log_axis(axis, values) -> None:
    axis.set_xscale("log")
    axis.xaxis.set_major_locator(LogLocator(base=2))
    axis.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.xaxis.set_minor_formatter(NullFormatter())  # log minor ticks would print 2x10^1 over the major labels
    low, high = min(values), max(values)
    axis.set_xlim(low / 1.3, high * 1.3)


def _panels(count: int, width: float = 3.4, height: float = 2.7, columns: int = 3):
    """A grid of ``count`` panels sharing both axes, and the axes in reading order (spare ones hidden)."""
    ncols = min(columns, count)
    nrows = math.ceil(count / ncols)
    figure, axes = plt.subplots(nrows, ncols, figsize=(width * ncols + 2.2, height * nrows + 0.9), sharex=True,
                                sharey=True, squeeze=False, constrained_layout=True)  # fmt: skip
    flat = list(axes.flat)
    for spare in flat[count:]:
        spare.set_visible(False)
    for axis in flat[:count]:
        axis.tick_params(labelbottom=True, labelleft=True)
    return figure, flat[:count]


def curve_plot(
    table: pd.DataFrame, fits: list[CurveFit], folder: Path, target: float | None = None,
    extrapolate_to: float | None = None, n_classes: int | None = None, show: Callable[[str], str] = display_name,
) -> Path:  # fmt: skip
    """UA (in percent) against examples per class (log axis) as small multiples: mean and 95% band per curve, the
    fitted law, the target crossing.

    A panel per feature set with heads in colour, or a panel per head with feature sets in colour where there
    are more heads than feature sets, so no panel holds more than a few bands.  A fitted law is drawn dashed
    beyond the measured sizes as far as a plan looks (:data:`EXTRAPOLATION_LIMIT` times the largest size, or
    to the target's crossing within :data:`PLAUSIBLE_LIMIT` times it), and
    never above its ceiling or 100%.  ``table`` is :func:`budget.analysis.aggregate`'s summary;
    ``n_classes`` draws the chance level.
    """
    balanced = table[balanced_rows(table)]
    heads = list(dict.fromkeys(balanced["head"]))
    feature_sets = list(dict.fromkeys(balanced["features"]))
    by_head = len(heads) > len(feature_sets)
    panels, series = (heads, feature_sets) if by_head else (feature_sets, heads)
    figure, axes = _panels(len(panels))
    fit_by_key = {(f.features, f.head): f for f in fits}
    xs, tops = list(balanced["n_per_class"]), [float(balanced["ci_high"].max())]
    fitted = False
    for axis, panel in zip(axes, panels, strict=True):
        for i, member in enumerate(series):
            features, head = (member, panel) if by_head else (panel, member)
            rows = balanced[(balanced["features"] == features) & (balanced["head"] == head)]
            if rows.empty:
                continue
            colour, marker = PALETTE[i % len(PALETTE)], MARKERS[i % len(MARKERS)]
            fit = fit_by_key.get((features, head))
            label = show(member) if by_head else member
            # measured means solid (markers tell series apart in greyscale): dashes mean extrapolation here
            axis.plot(rows["n_per_class"], rows["mean"], color=colour, marker=marker, linestyle="-", linewidth=1.6,
                      markersize=4, label=label)  # fmt: skip
            axis.fill_between(rows["n_per_class"], rows["ci_low"], rows["ci_high"], color=colour, alpha=0.15, linewidth=0)
            if fit is None or fit.chosen is None:
                continue
            drawn = _fitted_line(axis, fit, rows["n_per_class"], colour, target, extrapolate_to)
            xs.append(drawn[0])
            tops.append(drawn[1])
            fitted = True
        if target is not None:
            axis.axhline(target, color="#444444", linewidth=1, linestyle=":")
        if n_classes:
            axis.axhline(1 / n_classes, color="#999999", linewidth=1, linestyle="-.")
        axis.set_title(panel if by_head else show(panel))
    for axis in axes:
        _log_axis(axis, xs)
        axis.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))  # as readers think of UA
    low = min(float(balanced["ci_low"].min()), 1 / n_classes if n_classes else 1.0)
    axes[0].set_ylim(max(0.0, low - 0.05), min(1.0, max(tops) + 0.04))
    handles, labels = axes[0].get_legend_handles_labels()
    for axis in axes[1:]:  # every series once, whichever panel it first appears in
        for handle, label in zip(*axis.get_legend_handles_labels(), strict=True):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    extras = [(plt.Line2D([], [], color="#444444", linewidth=1.2, linestyle=EXTRAPOLATED), "fitted law; dashed: extrapolated")] if fitted else []
    if target is not None:
        extras.append((plt.Line2D([], [], color="#444444", linewidth=1, linestyle=":"), f"target UA {100 * target:.0f}%"))
    if n_classes:
        extras.append((plt.Line2D([], [], color="#999999", linewidth=1, linestyle="-."), f"chance ({n_classes} classes)"))
    figure.legend(handles + [h for h, _ in extras], labels + [t for _, t in extras], loc="outside right upper", frameon=False)
    figure.supxlabel("training examples per class (log scale)")
    figure.supylabel("unweighted accuracy (UA, %)")
    figure.suptitle("Budget curves: UA against labels per class (mean, 95% CI over folds and seeds)")
    return _save(figure, folder, "curve")


def _fitted_line(axis, fit: CurveFit, measured: pd.Series, colour: str, target: float | None,
                 extrapolate_to: float | None) -> tuple[float, float]:  # fmt: skip
    """Draw a curve's fitted law: solid over the measured sizes, dashed beyond as far as a plan looks, cut at its
    ceiling and at 100%; mark the target's crossing.  Return how far right and how high it was drawn."""
    largest = float(measured.max())
    right = max(extrapolate_to or 0, EXTRAPOLATION_LIMIT * largest)
    crossing = solve_n(fit.chosen, fit.chosen_fit.params, target) if target is not None else math.nan
    if 0 < crossing <= PLAUSIBLE_LIMIT * largest:  # 0: reached before the first label, off a log axis
        right = max(right, 1.15 * crossing)
    family = FAMILIES[fit.chosen]
    ceiling = float(fit.chosen_fit.params[family.names.index(family.ceiling)]) if family.ceiling else 1.0
    grid = np.geomspace(float(measured.min()), right, 80)
    predicted = fit.predict(grid)
    shown = predicted <= min(ceiling, 1.0)
    inside = grid <= largest
    axis.plot(grid[inside & shown], predicted[inside & shown], color=colour, linewidth=0.8, alpha=0.7)
    axis.plot(grid[~inside & shown], predicted[~inside & shown], color=colour, linewidth=1.1, linestyle=EXTRAPOLATED)
    if 0 < crossing <= PLAUSIBLE_LIMIT * largest and target <= min(ceiling, 1.0):
        axis.plot([crossing], [target], marker="x", color=colour, markersize=8, markeredgewidth=2, linestyle="none")
        axis.annotate(f"{math.ceil(crossing)}/class", (crossing, target), textcoords="offset points", xytext=(6, 6),
                      color=colour, fontsize=7, zorder=5,
                      bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none", "alpha": 0.85})  # fmt: skip
    return right, float(predicted[shown].max()) if shown.any() else 0.0


def compare_plot(table: pd.DataFrame, folder: Path, show: Callable[[str], str] = display_name) -> Path:
    """Grouped bars: UA per head (groups) and feature set (bars), with 95% intervals, from ``aggregate``'s table."""
    size = max(table["size"])
    table = table[table["size"] == size]
    heads = list(dict.fromkeys(table["head"]))
    feature_sets = list(dict.fromkeys(table["features"]))
    width = 0.8 / len(feature_sets)
    figure, axis = plt.subplots(figsize=(max(4.5, 1.3 * len(heads) + 2), 3.6))
    x = np.arange(len(heads))
    for i, features in enumerate(feature_sets):
        rows = table[table["features"] == features].set_index("head").reindex(heads)
        error = np.vstack([rows["mean"] - rows["ci_low"], rows["ci_high"] - rows["mean"]])
        axis.bar(x + (i - (len(feature_sets) - 1) / 2) * width, rows["mean"], width, yerr=error, capsize=3,
                 color=PALETTE[i % len(PALETTE)], hatch=HATCHES[i % len(HATCHES)], edgecolor="black", linewidth=0.5,
                 label=show(features))  # fmt: skip
    axis.set_xticks(x, heads)
    axis.set_ylabel("unweighted accuracy (UA, %)")
    axis.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))  # as readers think of UA
    label = size.phrase()
    axis.set_title(f"UA by head and features, {label} (mean, 95% CI)")
    axis.set_ylim(0, min(1.0, float(table["ci_high"].max()) + 0.1))
    axis.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return _save(figure, folder, "compare")


def recall_plot(results: pd.DataFrame, curves: list[tuple[str, str]], folder: Path,
                show: Callable[[str], str] = display_name) -> Path:  # fmt: skip
    """Per-class recall against examples per class as small multiples: a panel per curve, classes in colour."""
    classes = result_classes(results)
    figure, axes = _panels(len(curves), width=3.0, height=2.4, columns=min(5, max(2, len({h for _, h in curves}))))
    xs = []
    for axis, (features, head) in zip(axes, curves, strict=True):
        runs = curve_runs(results, features, head, balanced=True)
        means = runs.groupby("size")[[recall_column(c) for c in classes]].mean()
        means.index = [size.value for size in means.index]
        for i, name in enumerate(classes):
            axis.plot(means.index, means[recall_column(name)], color=PALETTE[i % len(PALETTE)], marker=MARKERS[i % len(MARKERS)],
                      linestyle=LINESTYLES[i % len(LINESTYLES)], markersize=3.5, label=name)  # fmt: skip
        xs += list(means.index)
        axis.set_title(_label(features, head, show), fontsize=8)
    for axis in axes:
        _log_axis(axis, xs)
        axis.set_ylim(0, 1)
        axis.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    figure.legend(*axes[0].get_legend_handles_labels(), loc="outside right upper", frameon=False)
    figure.supxlabel("training examples per class (log scale)")
    figure.supylabel("recall, % (mean over folds and seeds)")
    figure.suptitle("Per-class recall against labels per class")
    return _save(figure, folder, "recall")


def confusion_plot(results: pd.DataFrame, features: str, head: str, size: Size, folder: Path,
                   show: Callable[[str], str] = display_name) -> Path:  # fmt: skip
    """Row-normalised confusion matrix, summed over the runs of one size."""
    classes = result_classes(results)
    matrix = confusion_at(results, features, head, size)
    figure, axis = plt.subplots(figsize=(1.0 + 0.75 * len(classes), 0.6 + 0.75 * len(classes)))
    axis.imshow(matrix, cmap="Greys", vmin=0, vmax=1)
    axis.grid(False)
    for i in range(len(classes)):
        for j in range(len(classes)):
            axis.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=8,
                      color="white" if matrix[i, j] > 0.55 else "black")  # fmt: skip
    axis.set_xticks(range(len(classes)), classes, rotation=30, ha="right")
    axis.set_yticks(range(len(classes)), classes)
    axis.set_xlabel("predicted class")
    axis.set_ylabel("true class")
    amount = size.phrase("per class")
    axis.set_title(f"{_label(features, head, show)}, {amount}\n(share of each true class)")
    return _save(figure, folder, f"confusion-{_slug(show(features))}-{head}-{size}")


def _slug(text: str) -> str:
    """A file-name part of a name as shown (:func:`budget.features.display_name` or a study's own)."""
    return "".join(ch if ch.isalnum() else "-" for ch in text).strip("-")


def layer_plot(table: pd.DataFrame, layers: dict[str, int], folder: Path, name: str) -> Path:
    """UA by layer (rows) and size (columns) of one encoder, a heatmap per head, from ``aggregate``'s table."""
    rows = table[table["features"].isin(layers)]
    heads = list(dict.fromkeys(rows["head"]))
    sizes = sorted(rows["size"].unique())
    order = sorted(layers, key=layers.get)
    figure, axes = plt.subplots(1, len(heads), figsize=(1.1 * len(sizes) * len(heads) + 1.5, 0.35 * len(order) + 1.4),
                                squeeze=False, constrained_layout=True)  # fmt: skip
    low, high = float(rows["mean"].min()), float(rows["mean"].max())
    for axis, head in zip(axes[0], heads, strict=True):
        grid = rows[rows["head"] == head].pivot_table(index="features", columns="size", values="mean").reindex(index=order, columns=sizes)
        image = axis.imshow(grid.to_numpy(), aspect="auto", cmap="viridis", vmin=low, vmax=high)
        best = np.nanargmax(grid.to_numpy(), axis=0)
        for j in range(len(sizes)):
            for i in range(len(order)):
                value = grid.iloc[i, j]
                if np.isfinite(value):
                    axis.text(j, i, f"{100 * value:.1f}", ha="center", va="center", fontsize=7,
                              color="black" if value > (low + high) / 2 else "white",
                              fontweight="bold" if i == best[j] else "normal")  # fmt: skip
        axis.set_xticks(range(len(sizes)), [str(size) for size in sizes])
        axis.set_yticks(range(len(order)), [str(layers[f]) for f in order])
        axis.set_xlabel("training examples per class")
        axis.set_ylabel("layer")
        axis.set_title(head)
        axis.grid(False)
    figure.colorbar(image, ax=axes[0].tolist(), label="UA", format=PercentFormatter(1.0, decimals=0))
    figure.suptitle(f"UA by layer and size: {display_name(name)} (mean; bold: best layer per size)")
    return _save(figure, folder, f"layers-{_slug(display_name(name))}")


def layer_weights_plot(weights: pd.DataFrame, folder: Path, name: str) -> Path:
    """Mean learned layer weights against the layer, a line per size, a panel per head (``layer_weights`` runs)."""
    columns = [c for c in weights.columns if c.startswith("layer")]
    heads = list(dict.fromkeys(weights["head"]))
    sizes = sorted(weights["size"].unique())
    figure, axes = plt.subplots(1, len(heads), figsize=(3.6 * len(heads) + 1.2, 3.0), squeeze=False, sharey=True,
                                constrained_layout=True)  # fmt: skip
    for axis, head in zip(axes[0], heads, strict=True):
        for i, size in enumerate(sizes):
            runs = weights[(weights["head"] == head) & (weights["size"] == size)]
            if runs.empty:
                continue
            axis.plot(range(len(columns)), runs[columns].mean().to_numpy(), color=PALETTE[i % len(PALETTE)],
                      marker=MARKERS[i % len(MARKERS)], linestyle=LINESTYLES[i % len(LINESTYLES)], label=str(size))  # fmt: skip
        axis.axhline(1 / len(columns), color="grey", linewidth=0.8, linestyle=":")
        axis.set_xticks(range(len(columns)), [c.removeprefix("layer") for c in columns])
        axis.set_xlabel("layer")
        axis.set_title(head)
    axes[0][0].set_ylabel("learned weight (mean over runs)")
    axes[0][-1].legend(title="per class", loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    figure.suptitle(f"Layer weights learned on {display_name(name)} (dotted: equal weights)")
    return _save(figure, folder, f"layer-weights-{_slug(display_name(name))}")


def strategy_plot(summary: pd.DataFrame, folder: Path, show: Callable[[str], str] = display_name) -> Path:
    """UA (in percent) against clips annotated (log axis) of every acquisition strategy, a panel per feature set and
    head: mean and 95% band; random in black, the ``balanced`` oracle dotted as the bound it is.
    ``summary`` is :func:`budget.analysis.acquisition.strategy_summary`'s table."""
    curves = list(summary[["features", "head"]].drop_duplicates().itertuples(index=False, name=None))
    figure, axes = _panels(len(curves), columns=min(4, len(curves)))
    strategies = list(dict.fromkeys(summary["strategy"]))
    for axis, (features, head) in zip(axes, curves, strict=True):
        for i, name in enumerate(strategies):
            rows = summary[(summary["features"] == features) & (summary["head"] == head) & (summary["strategy"] == name)]
            if rows.empty:
                continue
            colour = "#000000" if name == BASELINE else PALETTE[i % len(PALETTE)]
            style = ":" if STRATEGIES[name].oracle else "-"
            label = f"{name} (oracle)" if STRATEGIES[name].oracle else name
            axis.plot(rows["clips"], rows["mean"], color=colour, marker=MARKERS[i % len(MARKERS)], linestyle=style,
                      linewidth=1.6 if name == BASELINE else 1.2, markersize=3.5, label=label)  # fmt: skip
            axis.fill_between(rows["clips"], rows["ci_low"], rows["ci_high"], color=colour, alpha=0.1, linewidth=0)
        axis.set_title(f"{show(features)} · {head}", fontsize=9)
    for axis in axes:
        _log_axis(axis, list(summary["clips"]))
        axis.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    figure.legend(*axes[0].get_legend_handles_labels(), loc="outside right center", frameon=False)
    figure.supxlabel("clips annotated (log scale)")
    figure.supylabel("unweighted accuracy (UA, %)")
    figure.suptitle("Acquisition strategies: UA against clips annotated (mean, 95% CI over folds and seeds)")
    return _save(figure, folder, "strategies")
