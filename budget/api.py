"""The Python API: a study in one call, for notebooks and scripts, with what the command line gives.

``budget.curve`` and ``budget.compare`` take the settings of ``budget curve``
and ``budget compare`` as keyword arguments, under their config-file names
(``features``, ``heads``, ``per_class``, ``seeds``, ``root``, ``layers``,
``steps`` ...), and return a :class:`StudyResult`; ``budget.load`` opens a
finished study's run folder.  See ``docs/python.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import pandas as pd

from budget.analysis import CurveFit, aggregate, fit_curve, labels_needed, measured_costs, recommend
from budget.errors import BudgetError, check_number, check_path
from budget.progress import note
from budget.registry import ACOUSTIC_HEADS
from budget.runfolder import FinishedStudy
from budget.sampling import FULL
from budget.study import Study, StudyConfig, default_run_dir


@dataclass
class StudyResult:
    """A finished study: its tidy results (one row per run) and the decisions drawn from them.

    Attributes
    ----------
    path : Path
        The run folder (running the same study again resumes it).
    results : pandas.DataFrame
        One row per (features, head, size, fold, seed): UA, WA, macro-F1, per-class recall, confusion
        matrix, training seconds.
    classes : list of str
        The classes, in the order of the confusion matrices.
    """

    path: Path
    results: pd.DataFrame
    classes: list[str]

    @property
    def summary(self) -> pd.DataFrame:
        """Mean UA per (features, head, size) with its standard deviation and 95% interval."""
        return aggregate(self.results)

    @cached_property
    def curves(self) -> list[CurveFit]:
        """The fitted learning curve of every (features, head), where two balanced sizes or more were measured."""
        if len({s for s in self.results["size"] if s != FULL}) < 2:
            return []
        pairs = self.results[["features", "head"]].drop_duplicates().itertuples(index=False)
        return [fit_curve(self.results, features, head) for features, head in pairs]

    def plan(self, target: float) -> pd.DataFrame:
        """Labels per class (and in total) each curve needs to reach UA ``target``, with 95% intervals.

        Parameters
        ----------
        target : float
            The UA to reach, between 0 and 1.

        Returns
        -------
        pandas.DataFrame
            One row per curve: ``per_class``, ``total``, ``low``, ``high``, and ``status`` (interpolated,
            extrapolated, too far or not reached), as the report's labels-needed table.
        """
        _check_target(target)
        fitted = [curve for curve in self.curves if curve.chosen]
        if not fitted:
            raise BudgetError("no curve could be fitted: a plan needs at least two balanced sizes")
        return labels_needed(self.results, fitted, [target])

    def recommendation(self, target: float | None = None) -> str:
        """The sentence the report opens with: the configuration to choose, compared run by run."""
        if target is not None:
            _check_target(target)
        fitted = [curve for curve in self.curves if curve.chosen]
        needed = labels_needed(self.results, fitted, [target]) if target is not None and fitted else pd.DataFrame()
        extraction = FinishedStudy.open(self.path).provenance.get("extraction_seconds_per_utterance")
        return recommend(self.summary, needed, target if not needed.empty else None, self.results,
                         measured_costs(self.results, extraction))  # fmt: skip

    def report(self, path: str | Path | None = None, target: float | None = None) -> Path:
        """Write ``report.md``, a self-contained ``report.html`` and the figures; return the HTML's path."""
        from budget.report import build_report

        if target is not None:
            _check_target(target)
        return build_report(self.path, None if path is None else check_path("path", path), target)


def curve(*, heads: str | list[str] = "mlp_pool", run_dir: str | Path | None = None, check_convergence: bool = True,
          config: str | Path | None = None, log=note, **settings) -> StudyResult:  # fmt: skip
    """UA against training-set size: ``budget curve`` from Python.

    Parameters
    ----------
    heads : str or list of str
        The heads to train (``mlp_pool`` by default).
    run_dir : path, optional
        Where results go; by default ``runs/curve-<corpus>-<settings hash>``.
    check_convergence : bool
        Retrain the smallest and largest size (and full) with twice the budget.
    config : path, optional
        A study TOML; keyword settings override it.
    log : callable
        Receives each line the study reports (stderr by default).
    **settings
        Any study setting by its config name: ``root``, ``corpus``, ``classes``, ``features``,
        ``per_class``, ``n``, ``seeds``, ``layers``, ``steps``, ``device`` ...

    Returns
    -------
    StudyResult
    """
    study_config = _config(config, heads=heads, **settings)
    return _run("curve", study_config, run_dir, "ends" if check_convergence else "none", log)


def compare(*, heads: str | list[str] | None = None, run_dir: str | Path | None = None, check_convergence: bool = False,
            config: str | Path | None = None, log=note, **settings) -> StudyResult:  # fmt: skip
    """Every head on every feature set at one size (the paper's Table 1): ``budget compare`` from Python.

    Parameters are :func:`curve`'s; ``heads`` defaults to every head for one feature set, and one size is
    given as ``n`` (in total) or ``per_class``.
    """
    study_config = _config(config, heads=heads if heads is not None else (None if config else list(ACOUSTIC_HEADS)),
                           **settings)  # fmt: skip
    sizes = study_config.n or study_config.per_class
    if sizes is None or len(sizes) != 1:
        raise BudgetError("compare runs one size: give n (total) or per_class with one value")
    return _run("compare", study_config, run_dir, "all" if check_convergence else "none", log)


def load(run_dir: str | Path) -> StudyResult:
    """A finished study's run folder as a :class:`StudyResult`."""
    folder = FinishedStudy.open(check_path("run_dir", run_dir))
    return StudyResult(folder.path, folder.results, folder.classes)


def _check_target(target) -> None:
    check_number("target", target)
    if not 0 < target < 1:
        raise BudgetError(f"target is a UA between 0 and 1; got {target!r}")


def _config(config: str | Path | None, **settings) -> StudyConfig:
    base = StudyConfig.from_toml(check_path("config", config)) if config is not None else StudyConfig()
    return base.with_overrides(**settings)


def _run(command: str, config: StudyConfig, run_dir, check: str, log) -> StudyResult:
    folder = check_path("run_dir", run_dir) if run_dir is not None else default_run_dir(command, config)
    Study(config, folder).run(log=log, check_convergence=check)
    return load(folder)


__all__ = ["StudyResult", "compare", "curve", "load"]
