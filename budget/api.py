"""The Python API, and the one door to the toolkit: every command of the CLI parses its options and calls these.

``budget.curve`` and ``budget.compare`` run a study from keyword settings
(:class:`budget.study.StudyConfig`'s keys, as a config file holds them) and
return a :class:`StudyResult`; ``budget.extract`` fills the feature store for
the same settings; ``budget.load`` opens a finished study's run folder,
``budget.plan`` and ``budget.report`` read one.  See ``docs/python.md``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import pandas as pd

from budget.analysis import (
    CurveFit,
    Plan,
    aggregate,
    cell_budgets,
    convergence_table,
    fit_curve,
    labels_needed,
    measured_costs,
)
from budget.analysis import plan as plan_for
from budget.analysis import recommendation as recommendation_sentence
from budget.analysis.acquisition import Saving, advice, overall, savings, strategy_summary, versus_random
from budget.errors import BudgetError, check_number, check_path
from budget.features import ExtractionReport
from budget.progress import note
from budget.runfolder import FinishedStudy, latest_run
from budget.study import Study, StudyConfig, default_run_dir

#: What ``check_convergence`` takes: False, True (the command's own check), or which cells to check.
CHECKS = {"none", "ends", "all"}


@dataclass
class StudyResult:
    """A finished study: its tidy results (one row per run) and the decisions drawn from them.

    Attributes
    ----------
    path : Path
        The run folder (running the same study again resumes it).
    results : pandas.DataFrame
        One row per (features, head, size, fold, seed): UA, WA, macro-F1, per-class recall, confusion
        matrix, training seconds.  ``size`` holds :class:`budget.sampling.Size` values (``size == 125``,
        ``size.full``).
    classes : list of str
        The classes, in the order of the confusion matrices.
    """

    path: Path
    results: pd.DataFrame
    classes: list[str]

    @cached_property
    def _folder(self) -> FinishedStudy:
        return FinishedStudy.open(self.path)

    @property
    def summary(self) -> pd.DataFrame:
        """Mean UA per (features, head, size) with its standard deviation and 95% interval."""
        return aggregate(self.results)

    @property
    def convergence(self) -> pd.DataFrame:
        """The convergence check: per checked cell and doubling of its budget, UA before and after, the change and
        whether the cell was still learning (empty when unchecked); ``budgets`` says what each cell needed."""
        return convergence_table(self.results, self._folder.convergence)

    @property
    def budgets(self) -> pd.DataFrame:
        """Per checked cell, the budget (a multiple of the study's) whose doubling no longer moved it, and whether
        one did within the cap."""
        return cell_budgets(self.convergence)

    @cached_property
    def curves(self) -> list[CurveFit]:
        """The fitted learning curve of every (features, head), where two balanced sizes or more were measured."""
        if len({size for size in self.results["size"] if size.balanced}) < 2:
            return []
        return [fit_curve(self.results, features, head) for features, head in self._folder.curves()]

    def display(self, features: str) -> str:
        """A feature set's name for a reader (folders shortened, a pair as its two parts)."""
        return self._folder.display(features)

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

    @property
    def costs(self) -> pd.DataFrame:
        """Per (features, head, size): measured training seconds per training utterance, and extraction seconds per
        utterance where the store recorded them."""
        return measured_costs(self.results, self._folder.provenance.get("extraction_seconds_per_utterance"))

    def recommendation(self, target: float | None = None) -> str:
        """The sentence the report opens with: the configuration to choose, compared run by run."""
        if target is not None:
            _check_target(target)
        return recommendation_sentence(self.results, self.summary, self.curves, target, self.costs, self.display)

    def report(self, path: str | Path | None = None, target: float | None = None) -> Path:
        """Write ``report.md``, a self-contained ``report.html`` and the figures; return the HTML's path."""
        return report(self.path, path, target)


@dataclass
class AcquisitionResult:
    """A finished acquisition study: one row per (features, head, strategy, clips, fold, seed) and what it says about
    choosing clips.

    Attributes
    ----------
    path : Path
        The run folder (running the same study again resumes it).
    results : pandas.DataFrame
        Per round: UA and the other metrics on the held-out fold, ``size`` in clips annotated, the class counts of the
        labelled clips and the clips the round added (``acquired``, JSON utterance ids).
    classes : list of str
    """

    path: Path
    results: pd.DataFrame
    classes: list[str]

    @cached_property
    def _folder(self) -> FinishedStudy:
        return FinishedStudy.open(self.path)

    @property
    def summary(self) -> pd.DataFrame:
        """Mean UA per (features, head, strategy, clips) with its standard deviation and 95% interval."""
        return strategy_summary(self.results)

    def display(self, features: str) -> str:
        """A feature set's name for a reader (folders shortened)."""
        return self._folder.display(features)

    @property
    def versus_random(self) -> pd.DataFrame:
        """Every strategy minus random at every size, paired by fold and seed, in UA points with 95% intervals."""
        return versus_random(self.results)

    def savings(self, targets: list[float] | None = None) -> list[Saving]:
        """Clips each strategy and random need to reach each target UA (a ladder over random's range, and
        ``targets``), with the paired interval of the clips saved."""
        for target in targets or []:
            _check_target(target)
        full = self.results[[size.full for size in self.results["size"]]]
        return savings(self.results, float(full["n_train"].mean()), targets)

    def advice(self) -> list[str]:
        """Per feature set and head, one sentence: does choosing clips beat labelling at random, and by how much."""
        return advice(overall(self.results), self.savings(), self._folder.display)

    def report(self, path: str | Path | None = None, target: float | None = None) -> Path:
        """Write ``report.md``, a self-contained ``report.html`` and the figure; return the HTML's path."""
        return report(self.path, path, target)


def curve(*, config: str | Path | None = None, run_dir: str | Path | None = None, check_convergence: bool | str = True,
          strict: bool = False, log: Callable[[str], None] = note, **settings) -> StudyResult:  # fmt: skip
    """UA against training-set size: ``budget curve`` from Python.

    Parameters
    ----------
    config : path, optional
        A study TOML; keyword settings override it.
    run_dir : path, optional
        Where results go; by default ``runs/curve-<corpus>-<settings hash>``.
    check_convergence : bool or {"ends", "all"}
        Retrain cells with twice the budget: the smallest and largest size and full (True, ``"ends"``), every
        size (``"all"``) or none (False).
    strict : bool
        Refuse any bad, silent or very short audio file instead of leaving it out or noting it.
    log : callable
        Receives each line the study reports (stderr by default).
    **settings
        Any study setting by its config name: ``root``, ``corpus``, ``classes``, ``features``, ``heads``,
        ``per_class``, ``n``, ``seeds``, ``layers``, ``steps``, ``device`` ...; ``heads`` defaults to the
        config file's, else ``mlp_pool``.

    Returns
    -------
    StudyResult
    """
    return _study("curve", config, settings, run_dir, _check(check_convergence, "ends"), strict, log)


def compare(*, config: str | Path | None = None, run_dir: str | Path | None = None,
            check_convergence: bool | str = False, strict: bool = False, log: Callable[[str], None] = note,
            **settings) -> StudyResult:  # fmt: skip
    """Every head on every feature set at one size (the paper's Table 1): ``budget compare`` from Python.

    Parameters are :func:`curve`'s; ``heads`` defaults to the config file's, else every head for one feature set;
    one size is given as ``n`` (in total) or ``per_class``; ``check_convergence=True`` checks every cell.
    """
    study_config = configured(config, settings).for_command("compare")
    sizes = study_config.n or study_config.per_class
    if sizes is None or len(sizes) != 1:
        raise BudgetError("compare runs one size: give n (--n, in total) or per_class (--per-class) with one value")
    return _run("compare", study_config, run_dir, _check(check_convergence, "all"), strict, log)


def acquire(*, config: str | Path | None = None, run_dir: str | Path | None = None, strict: bool = False,
            log: Callable[[str], None] = note, **settings) -> AcquisitionResult:  # fmt: skip
    """Which clips to label: acquisition strategies simulated on a labelled corpus, ``budget acquire`` from Python.

    Takes :func:`curve`'s settings and the acquisition's own: ``clips`` (sizes in clips annotated, the first the
    seed set's, e.g. ``[20, 40, 80, "full"]``) and ``strategies`` (default every one, ``budget.strategies``);
    ``heads`` defaults to the config file's, else ``mean_pool``.  On each fold, the training speakers are the
    unlabelled pool; every strategy acquires clips round by round and the head is retrained and scored on the
    held-out fold after each round.

    Returns
    -------
    AcquisitionResult
    """
    from budget.study import AcquisitionConfig

    return _run("acquire", configured(config, settings, AcquisitionConfig).for_command("acquire"), run_dir, "none",
                strict, log)  # fmt: skip


def select(*, labelled: str | Path, pool: str | Path, n: int, strategy: str = "entropy", out: str | Path | None = None,
           config: str | Path | None = None, strict: bool = False, log: Callable[[str], None] = note,
           **settings) -> pd.DataFrame:  # fmt: skip
    """The ``n`` clips of an unlabelled ``pool`` to send to annotators next: ``budget select`` from Python.

    Parameters
    ----------
    labelled : path
        The labelled corpus (its folder, or a CSV with ``corpus="csv"``), read as studies read ``root``.
    pool : path
        A folder of unlabelled audio, or a CSV with a ``path`` column; clips already labelled are left out.
    n : int
        How many clips to choose.
    strategy : str
        Any strategy but the ``balanced`` oracle (``budget acquire`` compares them on a labelled corpus).
    out : path, optional
        Also write the ranked list to this CSV.
    **settings
        Study settings: one feature set (``features``) and one head (``heads``, default ``mean_pool``), ``corpus``,
        ``classes``, ``store`` ...

    Returns
    -------
    pandas.DataFrame
        ``rank``, ``path``, ``strategy``, ``score`` (the strategy's own), ``predicted`` class and its ``probability``.
    """
    from budget import files
    from budget.study import AcquisitionConfig, select_clips

    study_config = configured(config, {**settings, "root": check_path("labelled", labelled)}, AcquisitionConfig)
    chosen = select_clips(study_config.for_command("acquire"), check_path("pool", pool), n, strategy, log, strict)
    if out is not None:
        files.write_csv(check_path("out", out), chosen)
    return chosen


def extract(*, config: str | Path | None = None, strict: bool = False, log: Callable[[str], None] = note,
            **settings) -> list[ExtractionReport]:  # fmt: skip
    """Extract a study's features into the store (only what it lacks): ``budget extract`` from Python.

    Takes the study settings :func:`curve` takes; those that say what is extracted and how it is stored
    (``corpus``, ``root``, ``classes``, ``features``, ``store``, ``max_seconds``, ``frame_dtype``,
    ``file_identity``, ``precision``, ``device``, ``extract_batch``, ``executor``) are used, so a study with the
    same settings finds everything stored.  Returns one :class:`budget.features.ExtractionReport` per feature spec.
    """
    from budget.study import extract_features

    return extract_features(configured(config, settings), log, strict)


def load(run_dir: str | Path) -> StudyResult | AcquisitionResult:
    """A finished study's run folder: a :class:`StudyResult`, or an :class:`AcquisitionResult` for an acquisition
    study."""
    folder = FinishedStudy.open(check_path("run_dir", run_dir))
    kind = AcquisitionResult if folder.acquisition else StudyResult
    return kind(folder.path, folder.results, folder.classes)


def plan(target: float, run_dir: str | Path | None = None, features: str | None = None, heads: str | None = None
         ) -> list[Plan]:  # fmt: skip
    """Per curve of a finished study (the latest under ``runs/`` by default; ``features`` or ``heads`` pick some):
    the labels that reach UA ``target``, with intervals, the next size to measure and the classes that need labels
    most (:class:`budget.analysis.Plan`)."""
    _check_target(target)
    folder = FinishedStudy.open(check_path("run_dir", run_dir) if run_dir is not None else latest_run())
    curves = [(f, h) for f, h in folder.curves() if features in (None, f) and heads in (None, h)]
    if not curves:
        raise BudgetError(f"{folder.path} has no curve for those features and heads; it has: {folder.curves()}")
    plans = []
    for features_spec, head in curves:
        fitted = fit_curve(folder.results, features_spec, head)
        if fitted.chosen is None:
            raise BudgetError(f"{features_spec} + {head}: " + "; ".join(fitted.flags))
        plans.append(plan_for(folder.results, target, features_spec, head, fitted, folder.provenance.get("class_counts")))
    return plans


def report(run_dir: str | Path | None = None, out: str | Path | None = None, target: float | None = None,
           seconds_per_label: float | None = None, cost_per_hour: float | None = None) -> Path:  # fmt: skip
    """Write a finished study's report (``report.md``, a self-contained ``report.html``, figures) into ``out``
    (``reports/<run name>`` by default) and return the HTML's path; the latest study under ``runs/`` by default."""
    from budget.report import Costs, build_report

    if target is not None:
        _check_target(target)
    folder = check_path("run_dir", run_dir) if run_dir is not None else latest_run()
    return build_report(folder, None if out is None else check_path("out", out), target, Costs(seconds_per_label, cost_per_hour))


def configured(config: str | Path | None, settings: dict, kind: type[StudyConfig] = StudyConfig) -> StudyConfig:
    """Defaults, then the config file, then ``settings``: what a study or an extraction runs with."""
    base = kind.from_toml(check_path("config", config)) if config is not None else kind()
    return base.with_overrides(**settings)


def _study(command: str, config, settings: dict, run_dir, check: str, strict: bool, log) -> StudyResult:
    return _run(command, configured(config, settings).for_command(command), run_dir, check, strict, log)


def _run(command: str, config: StudyConfig, run_dir, check: str, strict: bool, log) -> StudyResult | AcquisitionResult:
    """Run the command's study (an acquisition study for ``acquire``) in its folder and open what it wrote."""
    from budget.study import Acquisition

    folder = check_path("run_dir", run_dir) if run_dir is not None else default_run_dir(command, config)
    (Acquisition if command == "acquire" else Study)(config, folder).run(log=log, strict=strict, check_convergence=check)
    return load(folder)


def _check(value: bool | str, when_true: str) -> str:
    if isinstance(value, bool):
        return when_true if value else "none"
    if value not in CHECKS:
        raise BudgetError(f"check_convergence is True, False, 'ends' or 'all'; got {value!r}")
    return value


def _check_target(target) -> None:
    check_number("target", target)
    if not 0 < target < 1:
        raise BudgetError(f"target is a UA between 0 and 1; got {target!r}")


__all__ = ["AcquisitionResult", "StudyResult", "acquire", "compare", "curve", "extract", "load", "plan", "report",
           "select"]
