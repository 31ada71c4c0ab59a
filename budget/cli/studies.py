"""``budget curve``, ``compare``, ``acquire`` and ``select``: each parses its options and calls the function of its
name in :mod:`budget.api`, then prints what came back; nothing a study does lives here."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from budget.cli.common import TargetOption, app, err, out, user_errors
from budget.cli.options import with_settings
from budget.study import AcquisitionConfig

ReportOption = Annotated[bool, typer.Option("--report/--no-report", help="Write reports/<run>/report.md and .html.")]


def _log(line: str) -> None:
    err.print(line, soft_wrap=True)


@app.command("curve")
@user_errors
@with_settings()
def curve(
    settings: dict,
    target: TargetOption = None,
    report: ReportOption = True,
    check_convergence: Annotated[
        bool,
        typer.Option("--check-convergence/--no-check-convergence",
                     help="Train the smallest and largest size (and full) on to twice the budget; a cell that moves "
                          "trains on to twice that, up to 8x, and is shown at the budget it needed."),
    ] = True,
    check_every_size: Annotated[
        bool, typer.Option("--check-every-size", help="The convergence check on every size, not only the ends.")
    ] = False,
    config: Path | None = None,
    run_dir: Path | None = None,
    strict: bool = False,
) -> None:
    """UA against training-set size: a budget curve for one head (or several) on each feature set."""
    from budget.api import curve as run_curve

    check = ("all" if check_every_size else "ends") if check_convergence else "none"
    result = run_curve(config=config, run_dir=run_dir, check_convergence=check, strict=strict, log=_log, **settings)
    _print_unconverged(result)
    table = Table("features", "head", "per class", "training examples", "UA mean ± std", "runs", title="budget curve")
    for row in result.summary.itertuples():
        table.add_row(result.display(row.features), row.head, str(row.size), f"{row.n_train:.0f}",
                      f"{row.mean:.3f} ± {row.std:.3f}", str(row.runs))  # fmt: skip
    out.print(table)
    _finish(result, report, target)


@app.command("compare")
@user_errors
@with_settings()
def compare(
    settings: dict,
    report: ReportOption = True,
    check_convergence: Annotated[
        bool,
        typer.Option("--check-convergence/--no-check-convergence",
                     help="Retrain every cell with twice the budget; a cell that moves by more than 1 UA point trains "
                          "again at twice that, up to 8x, and is shown at the budget it needed."),
    ] = False,
    config: Path | None = None,
    run_dir: Path | None = None,
    strict: bool = False,
) -> None:
    """The paper's Table 1 at one training size: UA per head and feature set, each set's gain over the first, and
    every configuration against the best, paired run by run, with what it costs."""
    from budget.analysis import feature_gains
    from budget.api import compare as run_compare

    result = run_compare(config=config, run_dir=run_dir, check_convergence=check_convergence, strict=strict, log=_log,
                         **settings)  # fmt: skip
    _print_unconverged(result)
    summary = result.summary
    feature_sets = list(dict.fromkeys(summary["features"]))
    names = [result.display(f) for f in feature_sets]
    header = [f"{n}\nUA mean ± std" for n in names] + [f"{n}\nvs {names[0]}" for n in names[1:]]
    out.print(f"UA at {summary['size'].iloc[0]} per class ({summary['n_train'].iloc[0]:.0f} training examples)", soft_wrap=True)
    table = Table("head", *header)
    gains = feature_gains(result.results).set_index(["head", "features"])
    for head, rows in summary.groupby("head", sort=False):
        ua, std = rows.set_index("features")["mean"], rows.set_index("features")["std"]
        cells = [f"{ua[f]:.3f} ± {std[f]:.3f}" if f in ua else "-" for f in feature_sets]
        table.add_row(head, *cells, *[_gain(gains.loc[head, f]) if (head, f) in gains.index else "-" for f in feature_sets[1:]])
    out.print(table)
    _print_paired(result)
    _finish(result, report, None)


@app.command("acquire")
@user_errors
@with_settings(kind=AcquisitionConfig)
def acquire(
    settings: dict,
    report: ReportOption = True,
    target: TargetOption = None,
    config: Path | None = None,
    run_dir: Path | None = None,
    strict: bool = False,
) -> None:
    """Which clips to label: acquisition strategies simulated on a labelled corpus, on the curve's folds and seeds,
    each against labelling at random, in clips annotated."""
    from budget.api import acquire as run_acquire

    result = run_acquire(config=config, run_dir=run_dir, strict=strict, log=_log, **settings)
    summary = result.summary
    table = Table("features", "head", "strategy", *(str(size) for size in dict.fromkeys(summary["size"])),
                  title="UA (mean) by clips annotated")  # fmt: skip
    for (features, head, name), rows in summary.groupby(["features", "head", "strategy"], sort=False):
        table.add_row(result.display(features), head, name, *(f"{ua:.3f}" for ua in rows["mean"]))
    out.print(table)
    for line in result.advice():
        out.print(line, soft_wrap=True)
    _finish(result, report, target)


@app.command("select")
@user_errors
@with_settings("corpus", "classes", "features", "heads", "store", "device", "precision", "max_seconds", "frame_dtype",
               "file_identity", "extract_batch", run=("config", "strict"))  # fmt: skip
def select(
    settings: dict,
    labelled: Annotated[Path, typer.Option("--labelled", help="The labelled corpus: its folder (with --corpus), or a "
                                           "CSV of path,label,speaker with --corpus csv.")],
    pool: Annotated[Path, typer.Option("--pool", help="The unlabelled pool: a folder of audio, or a CSV with a path column.")],
    n: Annotated[int, typer.Option("--n", help="How many clips to choose.")],
    strategy: Annotated[str, typer.Option("--strategy", help="entropy (default), margin, kcenter, badge or random; "
                                          "budget acquire compares them on a labelled corpus.")] = "entropy",
    out_file: Annotated[Path, typer.Option("--out", help="The CSV to write (default selection.csv).")] = Path("selection.csv"),
    config: Path | None = None,
    strict: bool = False,
) -> None:
    """The clips of an unlabelled pool to send to annotators next, ranked by a strategy with a head trained on the
    labelled corpus."""
    from budget.api import select as run_select

    chosen = run_select(labelled=labelled, pool=pool, n=n, strategy=strategy, out=out_file, config=config,
                        strict=strict, log=_log, **settings)  # fmt: skip
    counts = chosen["predicted"].value_counts()
    out.print(f"{len(chosen)} clips ranked by {strategy} (predicted: {', '.join(f'{c} {k}' for c, k in counts.items())})"
              f": {out_file}", soft_wrap=True)  # fmt: skip


def _print_unconverged(result) -> None:
    """A line on the cells that needed more than the study's budget, one per cell whose last doubling moved it by
    more than a point but within its noise, and one per cell still moving at the cap."""
    from budget.analysis import BUDGETS, CONVERGENCE_TOLERANCE

    budgets = result.budgets
    needed = budgets[budgets["converged"] & (budgets["budget"] > 1)]
    if len(needed):
        err.print(f"convergence: {len(needed)} cell(s) needed more than the study's budget and are shown at it: "
                  + ", ".join(f"{result.display(r.features)} + {r.head} at {r.size} ({r.budget}x)" for r in needed.itertuples()),
                  soft_wrap=True)  # fmt: skip
    table = result.convergence
    last = table.drop_duplicates(["features", "head", "size"], keep="last")
    for row in last[~last["flagged"] & (last["change_points"].abs() > 100 * CONVERGENCE_TOLERANCE)].itertuples():
        err.print(f"[yellow]uncertain:[/] {result.display(row.features)} + {row.head} at {row.size} per class moves "
                  f"{row.change_points:+.1f} ± {row.change_se_points:.1f} UA points from {row.budget}x to "
                  f"{2 * row.budget}x the budget, within two standard errors: counted as converged; more --seeds "
                  "tell seed noise from learning", soft_wrap=True)  # fmt: skip
    for row in table[table["flagged"] & (table["budget"] == BUDGETS[-2])].itertuples():
        err.print(f"[bold yellow]not converged at {BUDGETS[-1]}x the budget:[/] {result.display(row.features)} + "
                  f"{row.head} at {row.size} per class moves {row.change_points:+.1f} ± {row.change_se_points:.1f} UA "
                  f"points from {row.budget}x to {2 * row.budget}x; raise --steps or the learning rate", soft_wrap=True)  # fmt: skip


def _gain(row) -> str:
    """A paired gain as a table cell: points, 95% interval, runs ahead."""
    return f"{row.gain_points:+.1f} pts\n({row.ci_low:+.1f} to {row.ci_high:+.1f})\nhigher in {row.wins} of {row.runs}"


def _print_paired(result) -> None:
    """Every configuration against the best, paired, with its cost, and the recommendation the report opens with."""
    from budget.analysis import against_best
    from budget.report import paired_rows

    paired = against_best(result.results, result.summary, result.costs)
    if len(paired) < 2:
        return
    rows = paired_rows(paired, result.display)
    table = Table(*rows.columns, title="against the best, paired by fold and seed (95% CI)")
    for row in rows.itertuples(index=False):
        table.add_row(*(str(v) for v in row))
    out.print(table)
    out.print(result.recommendation(), soft_wrap=True)


def _finish(result, report: bool, target: float | None) -> None:
    out.print(f"results: {result.path / 'results.parquet'}", soft_wrap=True)
    if report:
        out.print(f"report: {result.report(target=target)}", soft_wrap=True)
