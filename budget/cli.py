"""The ``budget`` command line: a thin layer over the package's functions.

Errors from bad input print one line (``error: ...``) and exit with status 2.
"""

from __future__ import annotations

import functools
import inspect
import sys
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

try:  # typer 0.29 and later carry their own click, whose errors all derive from TyperException
    from typer import TyperException as CommandLineError
except ImportError:  # earlier typer uses click itself
    from click import ClickException as CommandLineError

from budget.audio import MAX_SECONDS, MIN_SECONDS, scan_audio
from budget.corpora import CORPORA, data_dir, find_root, get_adapter, load_corpus
from budget.errors import BudgetError
from budget.folds import N_FOLDS, assign_folds, fold_names
from budget.sampling import corpus_ceiling


class _Commands(TyperGroup):
    """The command group; a mistake in the command line itself (an unknown option, a missing value) is one
    ``error:`` line and status 2, as every other mistake is, not the CLI library's boxed usage text."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except CommandLineError as error:
            if type(error).__name__ == "NoArgsIsHelpError":  # `budget` alone: the help text, as --help prints it
                error.show()
            else:
                context = getattr(error, "ctx", None)
                hint = f"; see `{context.command_path} --help`" if context is not None else ""
                err.print(f"[bold red]error:[/] {escape(error.format_message().rstrip('.'))}{hint}", soft_wrap=True)
            code = error.exit_code
        except typer.Abort:
            err.print("aborted")
            code = 1
        if not standalone_mode:
            return code
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    cls=_Commands,
    help="How many labelled examples does a speech emotion recognition model need?",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
corpus_app = typer.Typer(help="Inspect and fetch corpora.", no_args_is_help=True)
app.add_typer(corpus_app, name="corpus")

#: Columns of output that goes to a pipe or a file: wide enough that no identifier (a model path, a group name) is cut.
PIPED_WIDTH = 400


def _console(stderr: bool = False) -> Console:
    """A terminal gets its own width; a pipe or file gets :data:`PIPED_WIDTH`, not rich's 80 columns."""
    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, highlight=False, width=None if stream.isatty() else PIPED_WIDTH)


out = _console()
err = _console(stderr=True)

CorpusOption = Annotated[
    str, typer.Option("--corpus", "-c", help=f"Corpus adapter: {', '.join(CORPORA)}.", show_default=True)
]
RootOption = Annotated[
    Path | None,
    typer.Option("--root", help="The corpus folder (or CSV file); default: <data dir>/<corpus>, see BUDGET_DATA_DIR."),
]
ClassesOption = Annotated[
    str | None,
    typer.Option(
        "--classes",
        help="Classes to keep, e.g. neutral,happy,sad,angry; merge with +, e.g. happy+excited; "
        "presets iemocap4, basic4; 'all'. Default: the corpus's own (IEMOCAP: iemocap4).",
    ),
]


def user_errors(command):
    """Print a :class:`BudgetError` as one line and exit 2, instead of a traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except BudgetError as error:
            err.print(f"[bold red]error:[/] {error}", soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper


StoreOption = Annotated[
    Path | None, typer.Option("--store", help="Feature store folder; default: $BUDGET_STORE_DIR or ~/.cache/budget/features.")
]
DeviceOption = Annotated[str, typer.Option("--device", help="auto (CUDA when present), cpu or cuda[:N].")]
StudyDeviceOption = Annotated[
    str | None, typer.Option("--device", help="auto (CUDA when present), cpu or cuda[:N] (default: the config's, else auto).")
]
MaxSecondsOption = Annotated[
    float, typer.Option("--max-seconds", help="Crop each utterance to its first seconds (0: no crop).")
]


def _load(corpus: str, root: Path | None, classes: str | None) -> pd.DataFrame:
    """Load a corpus, fetching the default-fetchable one when it is not in the data folder."""
    from budget.corpora.fetch import ensure_corpus

    return load_corpus(corpus, ensure_corpus(corpus, root, log=err.print), classes)


@corpus_app.command("list")
@user_errors
def corpus_list() -> None:
    """List the corpus adapters and where each one is looked for."""
    table = Table("corpus", "default classes", "fetchable", "looked for at", "description")
    for adapter in CORPORA.values():
        table.add_row(
            adapter.name,
            adapter.default_classes,
            "yes" if adapter.url else "no",
            str(data_dir() / adapter.name),
            adapter.description,
        )
    out.print(table)


@corpus_app.command("info")
@user_errors
def corpus_info(
    corpus: CorpusOption = "emodb",
    root: RootOption = None,
    classes: ClassesOption = None,
    n_folds: Annotated[int, typer.Option("--folds", help="Folds when there are more than 10 groups.")] = N_FOLDS,
    strict: Annotated[bool, typer.Option("--strict", help="Fail on any bad audio file instead of skipping it.")] = False,
    save_manifest: Annotated[
        Path | None, typer.Option("--save-manifest", help="Also write the manifest (usable files) to this CSV.")
    ] = None,
) -> None:
    """Counts per class and group, duration, bad files, and the largest balanced training size."""
    usable = _scan(_load(corpus, root, classes), strict)
    folds = assign_folds(usable, n_folds)
    names = fold_names(usable, folds)
    ceiling = corpus_ceiling(usable, folds)
    classes_present = list(ceiling.counts.columns)

    n_groups = usable["group"].nunique()
    scheme = "leave-one-group-out" if folds.nunique() == n_groups else f"{folds.nunique()} speaker-grouped folds"
    hours = usable["duration"].sum() / 3600
    out.print(f"[bold]{get_adapter(corpus).name}[/] at {find_root(corpus, root)}")
    out.print(
        f"{len(usable)} utterances, {len(classes_present)} classes, {usable['speaker'].nunique()} speakers, "
        f"{n_groups} groups ({scheme}), {hours:.2f} h of audio "
        f"(mean {usable['duration'].mean():.2f} s, max {usable['duration'].max():.2f} s)"
    )

    by_group = pd.crosstab(usable["group"], usable["label"]).reindex(columns=classes_present, fill_value=0)
    table = Table("group", *classes_present, "total", title="utterances per group and class")
    for group, row in by_group.iterrows():
        table.add_row(str(group), *(str(v) for v in row), str(row.sum()))
    totals = by_group.sum()
    table.add_row("[bold]all[/]", *(f"[bold]{v}[/]" for v in totals), f"[bold]{totals.sum()}[/]")
    out.print(table)

    out.print(
        f"largest class-balanced training size every fold can supply: [bold]{ceiling.per_class} per class[/] "
        f"({ceiling.per_class * len(classes_present)} in total); limited by class {ceiling.label!r} when "
        f"{names[ceiling.fold]!r} is held out"
    )
    if save_manifest is not None:
        usable.assign(fold=folds).to_csv(save_manifest, index=False)
        out.print(f"manifest written to {save_manifest}")


@corpus_app.command("fetch")
@user_errors
def corpus_fetch(
    name: Annotated[str, typer.Argument(help="Corpus to download (only emodb is free to redistribute).")],
    dest: Annotated[Path | None, typer.Option("--dest", help="Data folder to unpack into.")] = None,
    url: Annotated[str | None, typer.Option("--url", help="A mirror instead of the official address.")] = None,
    sha256: Annotated[str | None, typer.Option("--sha256", help="Expected sha256 of the archive.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Download again even if a copy is there.")] = False,
) -> None:
    """Download a corpus from its authors' address, check it, and unpack it into the data folder."""
    from budget.corpora.fetch import fetch_corpus

    target = fetch_corpus(name, dest=dest, url=url, sha256=sha256, force=force)
    out.print(f"{get_adapter(name).name} is at {target}")


def _scan(manifest: pd.DataFrame, strict: bool) -> pd.DataFrame:
    """The usable part of a manifest; bad files are listed on stderr (or fatal with ``strict``)."""
    scan = scan_audio(manifest, MIN_SECONDS)
    if strict:
        scan.raise_if_problems()
    if not scan.problems.empty:
        err.print(f"[bold yellow]{len(scan.problems)} bad audio file(s), left out:[/]")
        for row in scan.problems.itertuples():
            err.print(f"  {row.path}: {row.reason}", soft_wrap=True)
    if scan.usable.empty:
        raise BudgetError(f"none of the {len(manifest)} audio files is usable")
    return scan.usable


@app.command("extract")
@user_errors
def extract(
    features: Annotated[
        list[str],
        typer.Option(
            "--features", "-f",
            help="Specs, comma-separated or repeated: lld, hf:<model>[:layer|all], wav2vec1:<ckpt.pt>, text:<model>.",
        ),
    ],
    corpus: CorpusOption = "emodb",
    root: RootOption = None,
    classes: ClassesOption = None,
    store: StoreOption = None,
    device: DeviceOption = "auto",
    precision: Annotated[str, typer.Option("--precision", help="Model precision: fp32, bf16 or fp16.")] = "fp32",
    max_seconds: MaxSecondsOption = MAX_SECONDS,
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", help="Utterances per batch (default 16 on CUDA, 8 on CPU).")
    ] = None,
    frame_dtype: Annotated[str, typer.Option("--frame-dtype", help="Stored frames: float16 or float32.")] = "float16",
    strict: Annotated[bool, typer.Option("--strict", help="Fail on any bad audio file instead of skipping it.")] = False,
    identity: Annotated[
        str, typer.Option("--identity", help="Know audio files by content (a hash of their bytes) or stat "
                                     "(path, size, date: no reading, for very large corpora).")
    ] = "content",
) -> None:
    """Extract features for a corpus into the feature store (only what it does not hold yet)."""
    from budget.features import FeatureStore, parse_feature_specs

    extractors = [e.configure(device, precision) for e in parse_feature_specs(joined(features))]
    manifest = _scan(_load(corpus, root, classes), strict)
    feature_store = FeatureStore(store)
    reports = feature_store.extract_all(
        extractors, manifest, max_seconds=max_seconds or None, batch_size=batch_size, frame_dtype=frame_dtype,
        utterance_identity=identity,
    )  # fmt: skip
    for extractor, report in zip(extractors, reports, strict=True):
        speed = (
            f" in {report.seconds:.1f} s: {report.utterances_per_second:.1f} utt/s, real-time factor {report.real_time_factor:.4f}"
            if report.extracted
            else ""
        )
        out.print(
            f"[bold]{extractor.spec}[/] ({extractor.device}, {extractor.precision}): {report.requested} utterances, "
            f"{report.cached} already stored, {report.extracted} extracted{speed}; {len(report.failures)} failed",
            soft_wrap=True,
        )
        for row in report.failures.itertuples():
            err.print(f"  {row.utt_id}: {row.reason}", soft_wrap=True)
    out.print(f"features stored in {feature_store.root}")


@app.command("features")
@user_errors
def features_list(store: StoreOption = None) -> None:
    """List what the feature store holds: extractor, dimensions, frames, size on disk, failures."""
    from budget.features import FeatureStore

    feature_store = FeatureStore(store)
    summary = feature_store.summary()
    if summary.empty:
        out.print(f"the feature store at {feature_store.root} is empty; fill it with `budget extract`")
        return
    table = Table("features", "frame", "layers", "crop s", "utterances", "frames", "MB", "failed", "files known by",
                  title=f"feature store {feature_store.root}")  # fmt: skip
    for row in summary.itertuples():
        table.add_row(
            row.spec, row.frame_shape, str(row.layers), str(row.max_seconds or "none"),
            str(row.utterances), str(row.frames), f"{row.size_mb:.1f}", str(row.failures),
            {"content": "content", "stat": "path, size, date"}.get(row.identity, row.identity),
        )  # fmt: skip
    out.print(table)
    for row in summary[summary["failures"] > 0].itertuples():
        err.print(f"[bold yellow]{row.spec}: {row.failures} failed utterance(s):[/]")
        for failure in feature_store.failures(row.entry).itertuples():
            err.print(f"  {failure.utt_id}: {failure.reason}", soft_wrap=True)


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


StrictOption = Annotated[bool, typer.Option("--strict", help="Stop on any bad audio file instead of leaving it out.")]
TargetOption = Annotated[float | None, typer.Option("--target", help="Target UA for the plan, e.g. 0.65.")]
ReportOption = Annotated[bool, typer.Option("--report/--no-report", help="Write reports/<run>/report.md and .html.")]


def _finish(folder: Path, report: bool, target: float | None) -> None:
    out.print(f"results: {folder / 'results.parquet'}", soft_wrap=True)
    if report:
        from budget.report import build_report

        out.print(f"report: {build_report(folder, target=target)}", soft_wrap=True)


ConfigOption = Annotated[Path | None, typer.Option("--config", help="A study TOML (see experiments/); options override it.")]
RunDirOption = Annotated[
    Path | None, typer.Option("--run-dir", help="Where results go; default runs/<command>-<corpus>-<settings hash>.")
]
FeaturesOption = Annotated[
    list[str] | None,
    typer.Option("--features", "-f", help="Feature specs, comma-separated or repeated (default: lld and hf:microsoft/wavlm-base-plus)."),
]
SeedsOption = Annotated[int | None, typer.Option("--seeds", help="Seeds per size and fold (default 3).")]
ScheduleOption = Annotated[
    str | None,
    typer.Option("--schedule", help="steps: the same optimiser steps for every size (default); "
                 "epochs: the paper's fixed epochs at a constant rate (steps grow with the subset)."),
]  # fmt: skip
StepsOption = Annotated[
    int | None,
    typer.Option("--steps", help="The most optimiser steps of an mlp_pool run (default 3000; a smaller subset stops after "
                 "150 passes over it, never before a quarter of this); the L-BFGS iteration cap of the full-batch heads."),
]  # fmt: skip
EpochsOption = Annotated[int | None, typer.Option("--epochs", help="Epochs under --schedule epochs (default 60).")]
LrOption = Annotated[float | None, typer.Option("--lr", help="Adam learning rate (default 1e-3; the paper's is 1e-4).")]
BatchOption = Annotated[int | None, typer.Option("--batch-size", help="Training batch size (default 16).")]
TrainFramesOption = Annotated[
    int | None,
    typer.Option("--train-frames", help="Evenly spaced frames of each utterance an mlp_pool step reads (default 8; "
                 "0: every frame, as before). Prediction always reads every frame."),
]  # fmt: skip
DropoutOption = Annotated[float | None, typer.Option("--dropout", help="Dropout after each layer (default 0.2).")]
LayerOption = Annotated[int | None, typer.Option("--layer", help="Pick one layer of features stored with :all.")]
FoldsOption = Annotated[
    int | None, typer.Option("--folds", help="Speaker-independent folds when a corpus has more than 10 groups (default 5).")
]
FoldFileOption = Annotated[
    Path | None, typer.Option("--fold-file", help="A CSV of utt_id (or group) and fold: a published fold design.")
]
StudyFrameDtypeOption = Annotated[
    str | None, typer.Option("--frame-dtype", help="Stored frames to read: float16 (default) or float32, as extracted.")
]
StudyMaxSeconds = Annotated[float | None, typer.Option("--max-seconds", help="Crop utterances (default 5 s; 0: none).")]
StudyCorpusOption = Annotated[str | None, typer.Option("--corpus", "-c", help="Corpus adapter (default emodb).")]
StudyIdentityOption = Annotated[
    str | None,
    typer.Option("--identity", help="Know audio files by content (a hash of their bytes) or stat (path, size, date), "
                 "as `budget extract --identity` (default: the config's, else content)."),
]  # fmt: skip


@dataclass
class StudyOptions:
    """The options ``curve`` and ``compare`` share: corpus, features, budget and where things go.

    An option left out is None, so the study's TOML (``--config``) and then the
    defaults hold: defaults < TOML < what was typed.
    """

    features: FeaturesOption = None
    corpus: StudyCorpusOption = None
    root: RootOption = None
    classes: ClassesOption = None
    seeds: SeedsOption = None
    schedule: ScheduleOption = None
    steps: StepsOption = None
    epochs: EpochsOption = None
    lr: LrOption = None
    batch_size: BatchOption = None
    train_frames: TrainFramesOption = None
    dropout: DropoutOption = None
    device: StudyDeviceOption = None
    store: StoreOption = None
    max_seconds: StudyMaxSeconds = None
    layer: LayerOption = None
    folds: FoldsOption = None
    fold_file: FoldFileOption = None
    frame_dtype: StudyFrameDtypeOption = None
    identity: StudyIdentityOption = None
    config: ConfigOption = None
    run_dir: RunDirOption = None
    strict: StrictOption = False

    def study_config(self, heads: str | None, per_class: str | None, n: str | None):
        """Defaults, then the TOML file, then the options typed on the command line."""
        from budget.study import StudyConfig

        base = StudyConfig.from_toml(self.config) if self.config else StudyConfig()
        text = lambda path: str(path) if path else None  # noqa: E731
        return base.with_overrides(
            corpus=self.corpus, root=text(self.root), classes=self.classes, features=joined(self.features), heads=heads,
            per_class=per_class, n=n, seeds=self.seeds, schedule=self.schedule, steps=self.steps, epochs=self.epochs,
            lr=self.lr, batch_size=self.batch_size, train_frames=self.train_frames, dropout=self.dropout, device=self.device, store=text(self.store),
            max_seconds=self.max_seconds, layer=self.layer, n_folds=self.folds, fold_file=text(self.fold_file),
            frame_dtype=self.frame_dtype, file_identity=self.identity,
        )  # fmt: skip


def joined(values: list[str] | None) -> str | None:
    """Repeated options as one comma-separated list: ``-f lld -f hf:x`` reads as ``-f lld,hf:x``."""
    return ",".join(values) if values else None


def with_study_options(command):
    """Give a command :class:`StudyOptions`' options and hand it them as one ``options`` object."""
    own = [p for p in inspect.signature(command, eval_str=True).parameters.values() if p.name != "options"]
    hints = typing.get_type_hints(StudyOptions, include_extras=True)
    shared = [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=hints[f.name])
              for f in fields(StudyOptions)]  # fmt: skip

    @functools.wraps(command)
    def wrapper(**values):
        options = StudyOptions(**{f.name: values.pop(f.name) for f in fields(StudyOptions)})
        return command(options=options, **values)

    wrapper.__signature__ = inspect.Signature([p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own] + shared)
    return wrapper


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
    """The paper's Table 1 at one training size: UA per head and feature set, and each set's gain over the first."""
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
    gains = feature_gains(results).set_index(["head", "features"])["gain_points"]
    for head, rows in summary.groupby("head", sort=False):
        ua = rows.set_index("features")["mean"]
        std = rows.set_index("features")["std"]
        cells = [f"{ua[f]:.3f} ± {std[f]:.3f}" if f in ua else "-" for f in feature_sets]
        table.add_row(head, *cells, *[f"{gains[head, f]:+.1f} pts" if (head, f) in gains else "-" for f in feature_sets[1:]])
    out.print(table)
    _finish(folder, report, None)


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
