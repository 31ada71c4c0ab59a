"""``budget report`` and ``budget plan``: a finished study read back as a report, or as labels for a target; each
calls :func:`budget.api.report` or :func:`budget.api.plan`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from budget.cli.common import TargetOption, app, out, user_errors

RunArgument = Annotated[
    Path | None, typer.Argument(help="A study's run folder (default: the latest under runs/).", show_default=False)
]
SecondsPerLabel = Annotated[float | None, typer.Option("--seconds-per-label", help="Annotator seconds per label.")]
CostPerHour = Annotated[float | None, typer.Option("--cost-per-hour", help="Cost of an annotator hour.")]


@app.command("report")
@user_errors
def report_command(
    run: RunArgument = None,
    target: TargetOption = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Report folder (default reports/<run name>).")] = None,
    seconds_per_label: SecondsPerLabel = None,
    cost_per_hour: CostPerHour = None,
) -> None:
    """Write a report (Markdown and self-contained HTML) for a finished study."""
    from budget.api import report

    path = report(run, out_dir, target, seconds_per_label, cost_per_hour)
    out.print(f"report: {path}", soft_wrap=True)
    out.print(f"        {path.with_suffix('.md')}", soft_wrap=True)


@app.command("plan")
@user_errors
def plan_command(
    target: Annotated[float, typer.Option("--target", help="Target UA, e.g. 0.65.")],
    run: RunArgument = None,
    features: Annotated[str | None, typer.Option("--features", "-f", help="Only this feature set.")] = None,
    heads: Annotated[str | None, typer.Option("--heads", "--model", "-m", help="Only this head.")] = None,
    seconds_per_label: SecondsPerLabel = None,
    cost_per_hour: CostPerHour = None,
) -> None:
    """How many labels, per class and in total, reach a target UA; which classes need them most."""
    from budget.api import load, plan
    from budget.report import Costs, plan_lines
    from budget.runfolder import latest_run

    costs = Costs(seconds_per_label, cost_per_hour)  # checked before any fit
    folder = run if run is not None else latest_run()
    show = load(folder).display
    for answer in plan(target, folder, features, heads):
        for i, line in enumerate(plan_lines(answer, costs, show)):
            out.print(("" if i == 0 else "  ") + line, soft_wrap=True)
