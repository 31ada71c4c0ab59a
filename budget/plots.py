"""Figures for reports: budget curves, the compare table, per-class recall, confusion matrices.

Made to be read at report size and printed in greyscale: every series has its
own line style and marker as well as its colour (the Okabe-Ito palette, safe
for colour-blind readers), bars carry hatching, axes are labelled with units,
and legends sit outside the data.  Each figure is saved as PNG and SVG.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the non-interactive backend)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter, PercentFormatter  # noqa: E402

from budget import files  # noqa: E402
from budget.analysis import CurveFit, confusion_at, solve_n  # noqa: E402
from budget.features import display_name  # noqa: E402
from budget.metrics import recall_column, result_classes  # noqa: E402
from budget.sampling import is_balanced, size_phrase, size_value  # noqa: E402

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
    }
)


def _save(figure, folder: Path, name: str) -> Path:
    """The figure as SVG and PNG in ``folder``, each written whole or not at all."""
    files.make_folder(folder)
    try:
        for suffix in ("svg", "png"):
            files.write_atomically(folder / f"{name}.{suffix}", lambda tmp, s=suffix: figure.savefig(tmp, format=s, bbox_inches="tight"))
    finally:
        plt.close(figure)
    return folder / f"{name}.png"


def _label(features: str, head: str) -> str:
    return f"{display_name(features)} · {head}"


def _log_axis(axis, values) -> None:
    axis.set_xscale("log")
    axis.xaxis.set_major_locator(LogLocator(base=2))
    axis.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.xaxis.set_minor_formatter(NullFormatter())  # log minor ticks would print 2x10^1 over the major labels
    low, high = min(values), max(values)
    axis.set_xlim(low / 1.3, high * 1.3)


def curve_plot(
    table: pd.DataFrame, fits: list[CurveFit], folder: Path, target: float | None = None,
    extrapolate_to: float | None = None, n_classes: int | None = None,
) -> Path:  # fmt: skip
    """UA (in percent) against examples per class (log axis): mean and 95% band per curve, fitted law, target crossing.

    ``table`` is :func:`budget.analysis.aggregate`'s summary of the results;
    ``n_classes`` draws the chance level (1 / classes).
    """
    balanced = table[is_balanced(table["size"])]
    figure, axis = plt.subplots(figsize=(6.4, 4.0))
    heads = list(dict.fromkeys(balanced["head"]))
    feature_sets = list(dict.fromkeys(balanced["features"]))
    fit_by_key = {(f.features, f.head): f for f in fits}
    xs = list(balanced["n_per_class"])
    curves = balanced.groupby(["features", "head"], sort=False)
    fitted = False
    for (features, head), rows in curves:  # colour by head; marker and line by feature set
        colour = PALETTE[heads.index(head) % len(PALETTE)]
        marker = MARKERS[feature_sets.index(features) % len(MARKERS)]
        line = LINESTYLES[feature_sets.index(features) % len(LINESTYLES)]
        fit = fit_by_key.get((features, head))
        label = _label(features, head) + (f" ({fit.chosen})" if fit is not None and fit.chosen else "")
        axis.plot(rows["n_per_class"], rows["mean"], color=colour, marker=marker, linestyle=line, linewidth=1.8, label=label)
        axis.fill_between(rows["n_per_class"], rows["ci_low"], rows["ci_high"], color=colour, alpha=0.15, linewidth=0)
        if fit is None or fit.chosen is None:
            continue
        top = max(extrapolate_to or 0, 4 * rows["n_per_class"].max())
        if target is not None:
            crossing = solve_n(fit.chosen, fit.chosen_fit.params, target)
            if 0 < crossing < 64 * rows["n_per_class"].max():  # 0: reached before the first label, off a log axis
                top = max(top, crossing * 1.2)
                axis.plot([crossing], [target], marker="x", color=colour, markersize=9, markeredgewidth=2, linestyle="none")
                axis.annotate(f"{math.ceil(crossing)}/class", (crossing, target), textcoords="offset points",
                              xytext=(7, 7), color=colour, fontsize=8, zorder=5,
                              bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none", "alpha": 0.85})  # fmt: skip
        grid = np.geomspace(rows["n_per_class"].min(), top, 80)
        measured = grid <= rows["n_per_class"].max()
        axis.plot(grid[measured], fit.predict(grid[measured]), color=colour, linewidth=0.8, alpha=0.7)
        axis.plot(grid[~measured], fit.predict(grid[~measured]), color=colour, linewidth=1.2, linestyle=EXTRAPOLATED)
        fitted = True
        xs.append(top)
    if fitted:  # one neutral sample for every curve's law, not a copy of the first curve's colour
        axis.plot([], [], color="#444444", linewidth=1.2, linestyle=EXTRAPOLATED,
                  label="fitted law (chosen by backtest); dashed: extrapolation")  # fmt: skip
    if target is not None:
        axis.axhline(target, color="#444444", linewidth=1, linestyle=":", label=f"target UA {100 * target:.0f}%")
    if n_classes:
        axis.axhline(1 / n_classes, color="#999999", linewidth=1, linestyle="-.", label=f"chance ({n_classes} classes)")
    _log_axis(axis, xs)
    axis.set_ylim(top=min(axis.get_ylim()[1], 1.0))  # an extrapolated law may pass 100%; UA cannot
    axis.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))  # as readers think of UA
    axis.set_xlabel("training examples per class (log scale)")
    axis.set_ylabel("unweighted accuracy (UA, %)")
    axis.set_title("Budget curve: UA against labels per class (mean, 95% CI over folds and seeds)")
    axis.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return _save(figure, folder, "curve")


def compare_plot(table: pd.DataFrame, folder: Path) -> Path:
    """Grouped bars: UA per head (groups) and feature set (bars), with 95% intervals, from ``aggregate``'s table."""
    size = sorted(table["size"].unique(), key=size_value)[-1]
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
                 label=display_name(features))  # fmt: skip
    axis.set_xticks(x, heads)
    axis.set_ylabel("unweighted accuracy (UA, %)")
    axis.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))  # as readers think of UA
    label = size_phrase(size)
    axis.set_title(f"UA by head and features, {label} (mean, 95% CI)")
    axis.set_ylim(0, min(1.0, float(table["ci_high"].max()) + 0.1))
    axis.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return _save(figure, folder, "compare")


def recall_plot(results: pd.DataFrame, features: str, head: str, folder: Path) -> Path:
    """Per-class recall against examples per class for one curve."""
    classes = result_classes(results)
    runs = results[(results["features"] == features) & (results["head"] == head) & is_balanced(results["size"])]
    means = runs.groupby(runs["size"].map(size_value))[[recall_column(c) for c in classes]].mean().sort_index()
    figure, axis = plt.subplots(figsize=(6.0, 3.6))
    for i, name in enumerate(classes):
        axis.plot(means.index, means[recall_column(name)], color=PALETTE[i % len(PALETTE)], marker=MARKERS[i % len(MARKERS)],
                  linestyle=LINESTYLES[i % len(LINESTYLES)], label=name)  # fmt: skip
    _log_axis(axis, list(means.index))
    axis.set_ylim(0, 1)
    axis.set_xlabel("training examples per class (log scale)")
    axis.set_ylabel("recall, % (mean over folds and seeds)")
    axis.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))  # as readers think of UA
    axis.set_title(f"Per-class recall: {_label(features, head)}")
    axis.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    slug = f"recall-{_slug(features)}-{head}"
    return _save(figure, folder, slug)


def confusion_plot(results: pd.DataFrame, features: str, head: str, size: str, folder: Path) -> Path:
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
    amount = size_phrase(size, "per class")
    axis.set_title(f"{_label(features, head)}, {amount}\n(share of each true class)")
    return _save(figure, folder, f"confusion-{_slug(features)}-{head}-{size}")


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in display_name(text)).strip("-")
