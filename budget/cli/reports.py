"""``budget report`` and ``budget plan``: a finished study read back as a report, or as labels for a target."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from budget.cli.common import TargetOption, app, err, out, user_errors
from budget.errors import BudgetError

RunArgument = Annotated[
    Path | None, typer.Argument(help="A study's run folder (default: the latest under runs/).", show_default=False)
]


@app.command("report")
@user_errors
def report_command(
    run: RunArgument = None,
    target: TargetOption = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Report folder (default reports/<run name>).")] = None,
    seconds_per_label: Annotated[float | None, typer.Option("--seconds-per-label", help="Annotator seconds per label.")] = None,
    cost_per_hour: Annotated[float | None, typer.Option("--cost-per-hour", help="Cost of an annotator hour.")] = None,
) -> None:
    """Write a report (Markdown and self-contained HTML) for a finished study."""
    from budget.report import Costs, build_report
    from budget.runfolder import latest_run

    path = build_report(run or latest_run(), out_dir, target, Costs(seconds_per_label, cost_per_hour))
    out.print(f"report: {path}", soft_wrap=True)
    out.print(f"        {path.with_suffix('.md')}", soft_wrap=True)


@app.command("plan")
@user_errors
def plan_command(
    target: Annotated[float, typer.Option("--target", help="Target UA, e.g. 0.65.")],
    run: RunArgument = None,
    features: Annotated[str | None, typer.Option("--features", "-f", help="Only this feature set.")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Only this head.")] = None,
    seconds_per_label: Annotated[float | None, typer.Option("--seconds-per-label", help="Annotator seconds per label.")] = None,
    cost_per_hour: Annotated[float | None, typer.Option("--cost-per-hour", help="Cost of an annotator hour.")] = None,
) -> None:
    """How many labels, per class and in total, reach a target UA; which classes need them most."""
    from budget.analysis import fit_curve, plan
    from budget.report import Costs, plan_lines
    from budget.runfolder import FinishedStudy, latest_run

    folder = FinishedStudy.open(run or latest_run())
    curves = [(f, h) for f, h in folder.curves() if (features is None or f == features) and (model is None or h == model)]
    if not curves:
        raise BudgetError(f"{folder.path} has no curve for those features and model; it has: {folder.curves()}")
    costs = Costs(seconds_per_label, cost_per_hour)
    for features_spec, head in curves:
        curve = fit_curve(folder.results, features_spec, head)
        if curve.chosen is None:
            err.print(f"{features_spec} + {head}: " + "; ".join(curve.flags), soft_wrap=True)
            continue
        for i, line in enumerate(plan_lines(plan(folder.results, target, features_spec, head, curve), costs)):
            out.print(("" if i == 0 else "  ") + line, soft_wrap=True)
