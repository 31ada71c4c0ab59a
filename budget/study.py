"""Studies: a grid of runs (features x heads x sizes x folds x seeds) to one results table.

A study reads a corpus, extracts what the feature store lacks, builds its
grid of runs (:mod:`budget.grid`: class-balanced subsets of the training
folds), hands it to an executor (:mod:`budget.execute`) that trains every head
on every feature set, and writes a tidy table with one row per (features,
head, size, fold, seed) into a run folder (:mod:`budget.runfolder`).

Running a study again skips the runs its parts already hold, so a crash or
Ctrl-C loses only the group in flight.  A run folder belongs to one
configuration: reusing it with other settings is an error.
"""

from __future__ import annotations

import hashlib
import json
import os
import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import pandas as pd

from budget.audio import MAX_SECONDS, notes_summary, usable_audio
from budget.corpora import get_adapter
from budget.corpora.fetch import load_fetching
from budget.engine.config import TrainConfig
from budget.engine.device import frame_products, with_products
from budget.errors import BudgetError, check_number, check_path
from budget.execute import Trainer, make_executor
from budget.execute import require as require_executor
from budget.features import FeatureStore, parse_feature_spec
from budget.features.base import FeatureExtractor
from budget.features.distributed import check_executor, cluster
from budget.features.entries import FILE_IDENTITIES, FRAME_DTYPES, EntrySettings
from budget.features.featureset import FeatureSet
from budget.features.layers import WEIGHTED, FeatureChoice, feature_choices, layer_of, read_layers, stored_specs
from budget.folds import N_FOLDS, assign_folds, classes_missing, fold_names, read_fold_file
from budget.grid import PAIR, build_jobs
from budget.labels import class_order
from budget.provenance import study_provenance
from budget.registry import REGISTRY, head_spec
from budget.registry import train as train_head
from budget.results import sort_results
from budget.runfolder import CONVERGENCE, RESULTS, RunFolder
from budget.sampling import (
    SizePlan,
    parse_sizes,
    plan_sizes,
    read_sizes,
)
from budget.settings import option

#: The default pretrained encoder: a self-supervised successor of the paper's wav2vec.
DEFAULT_ENCODER = "hf:microsoft/wavlm-base-plus"


@dataclass(frozen=True)
class StudyConfig:
    """Everything that defines a study.  TOML files under ``experiments/`` hold these keys."""

    corpus: str = field(default="emodb", metadata=option("--corpus", "Corpus adapter (default emodb).", "-c"))
    root: str | None = field(default=None, metadata=option(
        "--root", "The corpus folder (or CSV file); default: <data dir>/<corpus>, see BUDGET_DATA_DIR."))
    classes: str | None = field(default=None, metadata=option(
        "--classes", "Classes to keep, e.g. neutral,happy,sad,angry; merge with +, e.g. happy+excited; presets "
        "iemocap4, basic4; 'all'. Default: the corpus's own (IEMOCAP: iemocap4)."))
    features: tuple[str, ...] = field(default=("lld", DEFAULT_ENCODER), metadata=option(
        "--features", "Feature specs, comma-separated or repeated (default: lld and hf:microsoft/wavlm-base-plus).", "-f"))
    heads: tuple[str, ...] = ("mlp_pool",)
    per_class: tuple[int | str, ...] | None = None  # sizes per class ("full" = all); None: the default schedule
    n: tuple[int, ...] | None = None  # or sizes in total, divided by the number of classes
    seeds: int = field(default=3, metadata=option("--seeds", "Seeds per size and fold (default 3)."))
    n_folds: int = field(default=N_FOLDS, metadata=option(
        "--folds", "Speaker-independent folds when a corpus has more than 10 groups (default 5)."))
    fold_file: str | None = field(default=None, metadata=option(
        "--fold-file", "A CSV of utt_id (or group) and fold: a published fold design."))
    file_identity: str = field(default="content", metadata=option(
        "--identity", "Know audio files by content (a hash of their bytes) or stat (path, size, date), as `budget "
        "extract --identity` (default content)."))
    max_seconds: float = field(default=MAX_SECONDS, metadata=option(
        "--max-seconds", "Crop utterances (default 5 s; 0: none)."))
    frame_dtype: str = field(default="float16", metadata=option(
        "--frame-dtype", "Stored frames to read: float16 (default) or float32, as extracted."))
    layers: tuple[int | str, ...] | None = field(default=None, metadata=option(
        "--layers", "Layers of each hf:<model>:all feature set, each a feature set of its own: indices, last, or all "
        "(e.g. 2,4,last); read from the one extraction."))
    precision: str = "fp32"
    store: str | None = field(default=None, metadata=option(
        "--store", "Feature store folder; default: $BUDGET_STORE_DIR or ~/.cache/budget/features."))
    executor: str = field(default="local", metadata=option(
        "--executor", "Where runs train: local (this process, default), ray (a local Ray cluster) or ray:ADDRESS "
        "(ray:auto joins a running one); the results are the same."))
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self):
        for key in ("features", "heads"):
            if not all(isinstance(v, str) for v in getattr(self, key)):
                raise BudgetError(f"{key} must be names (strings); got {list(getattr(self, key))!r}")
        for head in self.heads:
            head_spec(head)
        check_number("seeds", self.seeds, integer=True, minimum=1)
        check_executor(self.executor)
        check_number("n_folds", self.n_folds, integer=True, minimum=2)
        check_number("max_seconds", self.max_seconds, minimum=0)
        object.__setattr__(self, "layers", read_layers(self.layers))
        if weighted := [spec for spec in self.features if layer_of(spec)[1] == WEIGHTED]:
            if not any(head_spec(head).mixes_layers for head in self.heads):
                mixing = ", ".join(name for name, spec in REGISTRY.items() if spec.mixes_layers)
                raise BudgetError(f"{weighted[0]} needs a head that learns layer weights: {mixing}")
        for key in ("root", "store", "fold_file"):  # paths: str or os.PathLike, held as written
            if getattr(self, key) is not None:
                check_path(key, getattr(self, key))
                object.__setattr__(self, key, os.fspath(getattr(self, key)))
        for key in ("corpus", "classes", "precision"):
            if getattr(self, key) is not None and not isinstance(getattr(self, key), str):
                raise BudgetError(f"{key} must be a string; got {getattr(self, key)!r}")
        if self.frame_dtype not in FRAME_DTYPES:
            raise BudgetError(f"frame_dtype must be one of {', '.join(FRAME_DTYPES)}; got {self.frame_dtype!r}")
        if self.file_identity not in FILE_IDENTITIES:
            raise BudgetError(f"file_identity must be one of {', '.join(FILE_IDENTITIES)}; got {self.file_identity!r}")
        if not self.features:
            raise BudgetError("a study needs at least one feature set")

    @classmethod
    def from_toml(cls, path: str | Path) -> StudyConfig:
        """Read a study configuration; unknown keys are an error."""
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except UnicodeDecodeError as error:
            raise BudgetError(f"cannot read config {path}: not UTF-8 text (byte {error.start} is not)") from None
        except (OSError, tomllib.TOMLDecodeError) as error:
            raise BudgetError(f"cannot read config {path}: {error}") from None
        return cls().with_overrides(**data)

    def with_overrides(self, **values) -> StudyConfig:
        """A copy with the given keys replaced (``None`` values are ignored); training keys go to ``train``."""
        own = {f.name for f in fields(self)} - {"train"}
        train_keys = {f.name for f in fields(TrainConfig)}
        unknown = set(values) - own - train_keys - {"train"}
        if unknown:
            raise BudgetError(f"unknown study setting(s): {', '.join(sorted(unknown))}")
        table = values.pop("train", {})
        if not isinstance(table, dict):
            raise BudgetError(f"train must be a table of training settings ([train] in a config file); got {table!r}")
        if unknown := set(table) - train_keys:
            raise BudgetError(f"unknown training setting(s) in [train]: {', '.join(sorted(unknown))}")
        train_values = {k: v for k, v in {**table, **values}.items() if k in train_keys}
        values = {k: v for k, v in values.items() if k in own and v is not None}
        for key in ("features", "heads"):
            if key in values and isinstance(values[key], str):
                values[key] = tuple(part.strip() for part in values[key].split(",") if part.strip())
            if key in values:
                values[key] = tuple(values[key]) if isinstance(values[key], list | tuple) else (values[key],)
        for key in ("per_class", "n"):  # read once: "125" and 125 are the same size
            if key in values:
                values[key] = read_sizes(values[key])
        train = replace(self.train, **{k: v for k, v in train_values.items() if v is not None})
        return replace(self, **values, train=train)

    def entry_settings(self) -> EntrySettings:
        """How the study's features are stored: the same settings ``budget extract`` names its entries by."""
        return EntrySettings(self.max_seconds, self.frame_dtype, self.file_identity)

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self), default=str))

    def digest(self) -> str:
        """A hash of the settings that change results (not the device or where things are stored)."""
        settings = self.to_dict()
        # where things are, how files are known and where runs train: none of them changes a result
        for key in ("store", "root", "file_identity", "executor"):
            settings.pop(key)
        for key, default in (("fold_file", None), ("frame_dtype", "float16"), ("layers", None)):  # at their defaults these stay out,
            if settings[key] == default:  # so a study's digest (and folder) does not move when a setting is added
                settings.pop(key)
        settings["train"].pop("device")
        settings["train"].pop("memory_mb")
        settings["train"]["bf16"] = with_products(self.train).bf16  # the products decided, not "where fast"
        return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]


@dataclass
class StudyData:
    """A study's corpus after scanning: manifest with folds, classes, size plan."""

    manifest: pd.DataFrame
    classes: list[str]
    folds: pd.Series
    fold_names: dict[int, str]
    plan: SizePlan
    problems: pd.DataFrame  # bad audio files, left out
    audio_notes: pd.DataFrame  # usable files worth a look (silent, very short)


def missing_classes_note(missing: dict[int, list[str]], names: dict[int, str]) -> str:
    """One sentence on held-out folds that lack a class, and what that does to their metrics."""
    listed = ", ".join(f"{names[fold]} (no {'/'.join(classes)})" for fold, classes in missing.items())
    return (f"held-out folds without every class: {listed}; a fold's UA and macro-F1 average over the classes it "
            "holds, and a class's recall over the folds that hold it")


def prepare(config: StudyConfig, log=print, strict: bool = False) -> StudyData:
    """Load and scan the corpus (fetching EmoDB when missing), assign folds, check the sizes against every fold.

    Bad audio files are left out, or with ``strict`` stop the study.
    """
    scan = usable_audio(load_fetching(config.corpus, config.root, config.classes, log), strict,
                        max_seconds=config.max_seconds or None)  # fmt: skip
    usable = scan.usable
    folds = read_fold_file(config.fold_file, usable, log) if config.fold_file else assign_folds(usable, config.n_folds)
    classes = class_order(usable["label"])
    if len(classes) < 2:
        raise BudgetError(f"a study needs at least two classes; the corpus{' with --classes' if config.classes else ''} "
                          f"holds {len(classes)} ({', '.join(classes)})")  # fmt: skip
    plan = plan_sizes(parse_sizes(config.per_class, config.n, len(classes)), usable, folds)
    if not plan.sizes:
        raise BudgetError("no requested size can be supplied by every fold: " + "; ".join(plan.skipped))
    return StudyData(usable, classes, folds, fold_names(usable, folds), plan, scan.problems, scan.notes)


def default_run_dir(command: str, config: StudyConfig) -> Path:
    """``runs/<command>-<corpus>-<digest>``: the same study resumes in the same folder."""
    return Path("runs") / f"{command}-{get_adapter(config.corpus).name}-{config.digest()}"


class Study:
    """One study in its run folder.

    ``trainer`` trains a list of runs of one head (:func:`budget.registry.train`'s
    protocol: head, inputs by part, labels, runs, classes, config); tests hand in their own.
    """

    def __init__(self, config: StudyConfig, run_dir: str | Path, trainer: Trainer = train_head):
        from budget.features.base import resolve_device

        self.run_dir = Path(run_dir)
        self.folder = RunFolder(self.run_dir)
        self.trainer = trainer
        train = replace(config.train, device=resolve_device(config.train.device))
        started = self.folder.recorded_train().get("bf16") if train.bf16 is None else None
        self.kept_products = isinstance(started, bool) and started != with_products(train).bf16
        train = replace(train, bf16=started) if isinstance(started, bool) else with_products(train)
        self.config = replace(config, train=train)

    def finished(self) -> pd.DataFrame:
        """Every run finished so far."""
        return self.folder.finished()

    def run(self, log=print, strict: bool = False, check_convergence: str = "none") -> pd.DataFrame:
        """Run what is not finished yet; write and return the full results table.

        ``strict``: see :func:`prepare`.  ``check_convergence``: ``none``,
        ``ends`` (the smallest and largest balanced size of each curve, and ``full``) or
        ``all``: retrain those cells with twice the budget into
        ``convergence.parquet`` (see :func:`budget.analysis.convergence_table`).
        """
        require_executor(self.config.executor)
        with cluster(self.config.executor):  # one Ray cluster for the extraction and every table
            return self.run_inputs(self.load_inputs(log, strict), log, check_convergence)

    def load_inputs(self, log=print, strict: bool = False) -> StudyInputs:
        """Scan the corpus, extract what the store lacks and load every feature set: what training needs."""
        config = self.config
        extractors = {spec: parse_feature_spec(spec).configure(config.train.device, config.precision)
                      for spec in stored_specs(config.features)}  # fmt: skip
        choices = feature_choices(config.features, config.layers, extractors)
        pairs = self._pairs(choices, extractors)
        data = prepare(config, log, strict)
        for note in [data.plan.note, *(f"skipped {s}" for s in data.plan.skipped)]:
            if note:
                log(note)
        if not data.problems.empty:
            log(f"{len(data.problems)} bad audio file(s) left out (see `budget corpus info`)")
        if not data.audio_notes.empty:
            log(f"audio worth a look, kept: {notes_summary(data.audio_notes)} (see `budget corpus info`; --strict refuses them)")
        if missing := classes_missing(data.manifest, data.folds, data.classes):
            log(missing_classes_note(missing, data.fold_names))
        entries, loaded = self._load_features(extractors, choices, data, log)
        return StudyInputs(data, loaded, entries, pairs, layer_sweeps(choices, extractors))

    def run_inputs(self, inputs: StudyInputs, log=print, check_convergence: str = "none") -> pd.DataFrame:
        """Train and write results from loaded inputs (on this machine, or one with neither corpus nor store)."""
        config, data = self.config, inputs.data
        order = {"features": [*inputs.features, *(f"{a}+{t}" for a, t in inputs.pairs)], "head": list(config.heads)}
        executor = make_executor(config.executor, self.folder, self.trainer, data.classes, data.fold_names, log)
        with self.folder.writing():
            self.folder.claim(config.digest(), config.to_dict())
            log(f"study folder: {self.run_dir} (running it again resumes)")
            if self.kept_products:
                log(f"this study started with {frame_products(config.train)} products and keeps them, although this "
                    "device would choose otherwise (bf16 = true or false in its config decides)")  # fmt: skip
            labels = data.manifest["label"].map({c: i for i, c in enumerate(data.classes)}).to_numpy()
            reads = {head: head_spec(head).inputs for head in config.heads}
            jobs = build_jobs(reads, inputs.features, inputs.pairs, data.manifest, data.folds, labels,
                              data.plan.sizes, config.seeds)  # fmt: skip
            if unmixed := [job for job in jobs if job.single and job.single.stacked > 1 and not head_spec(job.head).mixes_layers]:
                log("layer weights are learned by " + ", ".join(h for h in config.heads if head_spec(h).mixes_layers)
                    + "; not trained on stacked layers: " + ", ".join(f"{job.head} on {job.name}" for job in unmixed))
                jobs = [job for job in jobs if job not in unmixed]
            log(f"training: {config.train.describe()}")
            executor.run(jobs, RESULTS, config.train)
            if check_convergence != "none":
                doubled = [job.doubled(check_convergence) for job in jobs if head_spec(job.head).budgeted]
                which = "every size" if check_convergence == "all" else "the smallest and largest size and full"
                log(f"convergence check: {which} of each curve again, with twice the budget")
                executor.run([job for job in doubled if job.runs], CONVERGENCE, config.train.doubled())
            self.folder.write_provenance(study_provenance(
                config, data.manifest, data.classes, data.fold_names, data.plan.sizes, data.plan.skipped,
                len(data.problems), inputs.entries, inputs.layer_sweeps))  # fmt: skip
            results = self._table(RESULTS, order)
            if check_convergence != "none":
                self._table(CONVERGENCE, order)
        return results

    def _table(self, name: str, order: dict[str, list[str]]) -> pd.DataFrame:
        """The finished runs of ``results`` or ``convergence`` in the configured order, written as one table."""
        table = sort_results(self.folder.finished(name), order)
        self.folder.write_table(table, name)
        return table

    def _pairs(self, choices: list[FeatureChoice], extractors) -> list[tuple[str, str]]:
        """(audio, text) feature-set pairs for bimodal heads (one layer each); an error, before any work, when a
        modality is missing."""
        audio = [c.name for c in choices if extractors[c.stored].modality == "audio" and not c.weighted]
        text = [c.name for c in choices if extractors[c.stored].modality == "text"]
        pairs = [(a, t) for a in audio for t in text]
        bimodal = [h for h in self.config.heads if head_spec(h).inputs == PAIR]
        if bimodal and not pairs:
            raise BudgetError(f"{bimodal[0]} needs an audio and a text feature set, e.g. --features hf:MODEL,text:MODEL")
        return pairs

    def _load_features(self, extractors: dict[str, FeatureExtractor], choices: list[FeatureChoice], data: StudyData,
                       log) -> tuple[dict[str, str], dict[str, FeatureSet]]:  # fmt: skip
        """Extract what the store lacks, then load every feature set; return store entries and feature sets, by
        feature-set name."""
        store = FeatureStore(self.config.store)
        stored = asdict(self.config.entry_settings())
        reports = store.extract_all(list(extractors.values()), data.manifest, executor=self.config.executor, **stored)
        for extractor, report in zip(extractors.values(), reports, strict=True):
            if report.extracted:
                log(f"extracted {extractor.spec} for {report.extracted} utterances ({report.seconds:.0f} s)")
        report_of = dict(zip(extractors, reports, strict=True))
        entries = {choice.name: report_of[choice.stored].entry.name for choice in choices}
        loaded = {}
        for choice in choices:
            features = store.load(extractors[choice.stored], data.manifest, layer=choice.layer, **stored)
            if choice.weighted:
                features = stacked_layers(features)
            if features.missing:
                log(f"{choice.name}: {len(features.missing)} utterance(s) have no features and are left out")
            loaded[choice.name] = replace(features, spec=choice.name)
        return entries, loaded


def stacked_layers(features: FeatureSet) -> FeatureSet:
    """An ``:all`` entry's frames ``(frames, layers, width)`` as stacked inputs ``(frames, layers * width)``, for a
    head that learns the layers' weights."""
    n_frames, n_layers, width = features.frames.shape
    n = len(features)
    return replace(features, frames=features.frames.reshape(n_frames, n_layers * width),
                   mean=features.mean.reshape(n, n_layers * width), max=features.max.reshape(n, n_layers * width),
                   stacked=n_layers)  # fmt: skip


def layer_sweeps(choices: list[FeatureChoice], extractors: dict[str, FeatureExtractor]) -> dict[str, dict]:
    """Per ``:all`` entry a study reads: its layers' feature sets, the one its encoder reads by default, and
    the weighted sum's, for the report's layer comparison."""
    sweeps: dict[str, dict] = {}
    for choice in (c for c in choices if c.from_all):
        model, _ = layer_of(choice.stored)
        sweep = sweeps.setdefault(choice.stored, {"layers": {}, "default": f"{model}:{extractors[choice.stored].default_layer}",
                                                  "weighted": None})  # fmt: skip
        if choice.weighted:
            sweep["weighted"] = choice.name
        else:
            sweep["layers"][choice.name] = choice.layer
    return sweeps


@dataclass
class StudyInputs:
    """A study's corpus and loaded features: everything training needs, and picklable."""

    data: StudyData
    features: dict[str, FeatureSet]
    entries: dict[str, str]  # feature set -> store entry
    pairs: list[tuple[str, str]]  # (audio, text) feature sets for bimodal heads
    layer_sweeps: dict[str, dict] = field(default_factory=dict)  # see layer_sweeps()


__all__ = ["Study", "StudyConfig", "default_run_dir", "prepare"]
