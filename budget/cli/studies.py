"""``budget curve`` and ``budget compare``: studies.

The options both take are built from the settings' own declarations: every
field of :class:`~budget.study.StudyConfig` and :class:`~budget.engine.config.TrainConfig`
declared with :func:`budget.settings.option` is a command-line option under its
flag and a TOML key under its name, and nothing else is written per setting.
An option left out is None, so the study's TOML (``--config``) and then the
defaults hold: defaults < TOML < what was typed.
"""

from __future__ import annotations

import functools
import inspect
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from budget.cli.common import TargetOption, app, err, joined, out, user_errors
from budget.engine.config import TrainConfig
from budget.errors import BudgetError
from budget.settings import cli_form
from budget.study import StudyConfig

ReportOption = Annotated[bool, typer.Option("--report/--no-report", help="Write reports/<run>/report.md and .html.")]


def study_settings() -> dict[str, tuple[type, tuple[str, str | None, str]]]:
    """Every setting a study takes from the command line: its TOML key, its type and its (flag, short, help)."""
    settings = {}
    for owner in (StudyConfig, TrainConfig):
        hints = typing.get_type_hints(owner)
        for spec in fields(owner):
            if (form := cli_form(spec.metadata)) is not None:
                settings[spec.name] = (hints[spec.name], form)
    return settings


def _option_type(kind) -> object:
    """The command-line type of a setting: a list for a tuple of names (repeatable), always optional."""
    args = [arg for arg in typing.get_args(kind) if arg is not type(None)] if typing.get_origin(kind) is not tuple else []
    kind = args[0] if len(args) == 1 else kind
    if typing.get_origin(kind) is tuple:
        return list[str] | None
    return kind | None


@dataclass
class StudyOptions:
    """What ``curve`` and ``compare`` were given: the typed settings (None where left out) and how to run."""

    settings: dict[str, object]
    config: Path | None = None
    run_dir: Path | None = None
    strict: bool = False

    def study_config(self, heads: str | None, per_class: str | None, n: str | None) -> StudyConfig:
        """Defaults, then the TOML file, then the options typed on the command line."""
        base = StudyConfig.from_toml(self.config) if self.config else StudyConfig()
        typed = {key: joined(value) if isinstance(value, list) else value for key, value in self.settings.items()}
        return base.with_overrides(heads=heads, per_class=per_class, n=n, **typed)


#: How a study runs, besides its settings: not TOML keys.
RUN_OPTIONS = {
    "config": Annotated[Path | None, typer.Option("--config", help="A study TOML (see experiments/); options override it.")],
    "run_dir": Annotated[
        Path | None, typer.Option("--run-dir", help="Where results go; default runs/<command>-<corpus>-<settings hash>.")
    ],
    "strict": Annotated[bool, typer.Option("--strict", help="Stop on any bad audio file instead of leaving it out.")],
}


def with_study_options(command):
    """Give a command every study setting's option and :data:`RUN_OPTIONS`, handed to it as one ``options``."""
    own = [p for p in inspect.signature(command, eval_str=True).parameters.values() if p.name != "options"]
    keyword = inspect.Parameter.KEYWORD_ONLY
    shared = [
        inspect.Parameter(key, keyword, default=None,
                          annotation=Annotated[_option_type(kind), typer.Option(flag, *filter(None, [short]), help=text)])
        for key, (kind, (flag, short, text)) in study_settings().items()
    ]  # fmt: skip
    shared += [inspect.Parameter(key, keyword, default=False if key == "strict" else None, annotation=annotation)
               for key, annotation in RUN_OPTIONS.items()]  # fmt: skip

    @functools.wraps(command)
    def wrapper(**values):
        run = {key: values.pop(key) for key in RUN_OPTIONS}
        options = StudyOptions({key: values.pop(key) for key in study_settings()}, **run)
        return command(options=options, **values)

    wrapper.__signature__ = inspect.Signature([p.replace(kind=keyword) for p in own] + shared)
    return wrapper


def _run_study(command: str, study_config, options: StudyOptions, check_convergence: str = "none"):
    from budget.study import Study, default_run_dir

    folder = options.run_dir or default_run_dir(command, study_config)
    log = lambda line: err.print(line, soft_wrap=True)  # noqa: E731
    results = Study(study_config, folder).run(log=log, strict=options.strict, check_convergence=check_convergence)
    if check_convergence != "none":
        from budget.analysis import convergence_table
        from budget.runfolder import FinishedStudy

        finished = FinishedStudy.open(folder)
        table = convergence_table(finished.results, finished.doubled)
        for row in table[table["flagged"]].itertuples():
            noise = abs(row.change_points) < 2 * row.change_se_points
            err.print(f"[bold yellow]not converged:[/] {row.features} + {row.head} at {row.size} per class moves "
                      f"{row.change_points:+.1f} ± {row.change_se_points:.1f} UA points with twice the budget; raise --steps"
                      + ("; or, as that is within two standard errors, add --seeds to tell seed noise from learning"
                         if noise else ""), soft_wrap=True)  # fmt: skip
    return results, folder



def _finish(folder: Path, report: bool, target: float | None) -> None:
    out.print(f"results: {folder / 'results.parquet'}", soft_wrap=True)
    if report:
        from budget.report import build_report

        out.print(f"report: {build_report(folder, target=target)}", soft_wrap=True)



@app.command("curve")
@user_errors
@with_study_options
def curve(
    options: StudyOptions,
    model: Annotated[
        str | None,
        typer.Option(
            "--model", "-m",
            help="Heads: mean_pool, meanmax_pool, attn_pool, mlp_pool, logreg; align_lstm (with _audio, _text "
            "ablations) on an audio and a text feature set.",
        ),
    ] = None,
    per_class: Annotated[str | None, typer.Option("--per-class", help="Sizes per class, e.g. 5,10,20,40,full.")] = None,
    n: Annotated[str | None, typer.Option("--n", help="Sizes in total, e.g. 500,1000 (divided by the classes).")] = None,
    target: TargetOption = None,
    report: ReportOption = True,
    check_convergence: Annotated[
        bool,
        typer.Option("--check-convergence/--no-check-convergence",
                     help="Retrain the smallest and largest size (and full) with twice the budget; flag cells that move."),
    ] = True,
    check_every_size: Annotated[
        bool, typer.Option("--check-every-size", help="The convergence check on every size, not only the ends.")
    ] = False,
) -> None:
    """UA against training-set size: a budget curve for one head on each feature set."""
    from budget.analysis import aggregate
    from budget.features import display_name

    check = ("all" if check_every_size else "ends") if check_convergence else "none"
    results, folder = _run_study("curve", options.study_config(model, per_class, n), options, check)
    summary = aggregate(results)
    table = Table("features", "head", "per class", "training examples", "UA mean ± std", "runs", title="budget curve")
    for row in summary.itertuples():
        table.add_row(
            display_name(row.features), row.head, row.size, f"{row.n_train:.0f}",
            f"{row.mean:.3f} ± {row.std:.3f}", str(row.runs),
        )  # fmt: skip
    out.print(table)
    _finish(folder, report, target)


@app.command("compare")
@user_errors
@with_study_options
def compare(
    options: StudyOptions,
    n: Annotated[str | None, typer.Option("--n", help="Training examples in total (divided by the classes).")] = None,
    per_class: Annotated[str | None, typer.Option("--per-class", help="Or the size per class.")] = None,
    models: Annotated[
        str | None, typer.Option("--models", "-m", help="Heads (default mean_pool,meanmax_pool,attn_pool,mlp_pool,logreg).")
    ] = None,
    report: ReportOption = True,
    check_convergence: Annotated[
        bool,
        typer.Option("--check-convergence/--no-check-convergence",
                     help="Retrain every cell with twice the budget; flag cells that move by more than 1 UA point."),
    ] = False,
) -> None:
    """The paper's Table 1 at one training size: UA per head and feature set, each set's gain over the first, and
    every configuration against the best, paired run by run, with what it costs."""
    from budget.analysis import aggregate, feature_gains
    from budget.features import display_name
    from budget.registry import ACOUSTIC_HEADS

    study_config = options.study_config(models, per_class, n)
    if models is None and options.config is None:
        study_config = study_config.with_overrides(heads=ACOUSTIC_HEADS)
    sizes = study_config.n or study_config.per_class
    if sizes is None or len(sizes) != 1:
        raise BudgetError("compare runs one size: give --n (total) or --per-class with one value")
    results, folder = _run_study("compare", study_config, options, "all" if check_convergence else "none")
    summary = aggregate(results)
    feature_sets = list(dict.fromkeys(summary["features"]))
    names = [display_name(f) for f in feature_sets]
    header = [f"{n}\nUA mean ± std" for n in names] + [f"{n}\nvs {names[0]}" for n in names[1:]]
    size = summary["size"].iloc[0]
    out.print(f"UA at {size} per class ({summary['n_train'].iloc[0]:.0f} training examples)", soft_wrap=True)
    table = Table("head", *header)
    gains = feature_gains(results).set_index(["head", "features"])
    for head, rows in summary.groupby("head", sort=False):
        ua = rows.set_index("features")["mean"]
        std = rows.set_index("features")["std"]
        cells = [f"{ua[f]:.3f} ± {std[f]:.3f}" if f in ua else "-" for f in feature_sets]
        table.add_row(head, *cells, *[_gain(gains.loc[head, f]) if (head, f) in gains.index else "-" for f in feature_sets[1:]])
    out.print(table)
    _print_paired(results, summary, folder)
    _finish(folder, report, None)


def _gain(row) -> str:
    """A paired gain as a table cell: points, 95% interval, runs ahead."""
    return f"{row.gain_points:+.1f} pts\n({row.ci_low:+.1f} to {row.ci_high:+.1f})\nhigher in {row.wins} of {row.runs}"


def _print_paired(results, summary, folder: Path) -> None:
    """Every configuration against the best, paired, with its cost, and the recommendation the report opens with."""
    import pandas as pd

    from budget.analysis import against_best, measured_costs, recommend
    from budget.report import paired_rows
    from budget.runfolder import FinishedStudy

    extraction = FinishedStudy.open(folder).provenance.get("extraction_seconds_per_utterance")
    costs = measured_costs(results, extraction)
    paired = against_best(results, summary, costs)
    if len(paired) < 2:
        return
    rows = paired_rows(paired)
    table = Table(*rows.columns, title="against the best, paired by fold and seed (95% CI)")
    for row in rows.itertuples(index=False):
        table.add_row(*(str(v) for v in row))
    out.print(table)
    out.print(recommend(summary, pd.DataFrame(), results=results, costs=costs), soft_wrap=True)
