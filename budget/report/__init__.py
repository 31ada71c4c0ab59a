"""Reports an annotation lead can read: ``report.md`` and a self-contained ``report.html`` for a finished study.

Modules: ``document`` (blocks rendered to Markdown and HTML, annotation
costs), ``curves`` (the report of a budget curve or compare study) and
``acquisition`` (the report of an acquisition study: which clips to label).
"""

from __future__ import annotations

from pathlib import Path

from budget.report.acquisition import acquisition_report
from budget.report.curves import curve_report, paired_rows, plan_lines
from budget.report.document import Costs
from budget.runfolder import FinishedStudy


def build_report(run: str | Path, out_dir: str | Path | None = None, target: float | None = None,
                 costs: Costs | None = None) -> Path:  # fmt: skip
    """Write ``report.md``, ``report.html`` and figures for a run folder (into ``reports/<run name>`` by default);
    return the HTML's path."""
    folder = FinishedStudy.open(run)
    out = Path(out_dir) if out_dir is not None else Path("reports") / folder.path.name
    if folder.acquisition:
        return acquisition_report(folder, out, target, costs or Costs())
    return curve_report(folder, out, target, costs or Costs())


__all__ = ["Costs", "build_report", "paired_rows", "plan_lines"]
