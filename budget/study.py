"""Studies: a grid of runs (features x heads x sizes x folds x seeds) to one results table.

A study reads a corpus, extracts what the feature store lacks, draws
class-balanced subsets from the training folds, trains every head on every
feature set with runs that share a size trained together, and writes a tidy
table with one row per (features, head, size, fold, seed) into a run folder
(:mod:`budget.runfolder`).

Running a study again skips the runs its parts already hold, so a crash or
Ctrl-C loses only the group in flight.  A run folder belongs to one
configuration: reusing it with other settings is an error.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import time
import tomllib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import pandas as pd

from budget.audio import MAX_SECONDS, MIN_SECONDS, scan_audio
from budget.corpora import get_adapter, load_corpus
from budget.corpora.fetch import ensure_corpus
from budget.engine.config import TrainConfig
from budget.engine.cost import CostModel
from budget.engine.device import frame_products, with_products
from budget.engine.packed import DeviceFeatures
from budget.errors import BudgetError, check_number
from budget.features import FeatureStore, parse_feature_spec
from budget.features.entries import FILE_IDENTITIES, FRAME_DTYPES, EntrySettings
from budget.features.featureset import FeatureSet
from budget.folds import N_FOLDS, assign_folds, classes_missing, fold_names, read_fold_file
from budget.grid import Run
from budget.labels import class_order
from budget.metrics import run_metrics
from budget.progress import progress_bar
from budget.registry import PAIR, HeadSpec, head_spec
from budget.registry import train as train_head
from budget.results import RESULT_KEY, sort_results
from budget.runfolder import CONVERGENCE, RESULTS, RunFolder
from budget.sampling import (
    SizePlan,
    balanced_subset,
    curve_ends,
    parse_sizes,
    plan_sizes,
    read_sizes,
)

Trainer = Callable[..., list[np.ndarray]]

#: The default pretrained encoder: a self-supervised successor of the paper's wav2vec.
DEFAULT_ENCODER = "hf:microsoft/wavlm-base-plus"


@dataclass(frozen=True)
class StudyConfig:
    """Everything that defines a study.  TOML files under ``experiments/`` hold these keys."""

    corpus: str = "emodb"
    root: str | None = None
    classes: str | None = None
    features: tuple[str, ...] = ("lld", DEFAULT_ENCODER)
    heads: tuple[str, ...] = ("mlp_pool",)
    per_class: tuple[int | str, ...] | None = None  # sizes per class ("full" = all); None: the default schedule
    n: tuple[int, ...] | None = None  # or sizes in total, divided by the number of classes
    seeds: int = 3
    n_folds: int = N_FOLDS
    fold_file: str | None = None  # a CSV of utt_id (or group) and fold: a published design instead of n_folds
    file_identity: str = "content"  # how the store knows an audio file: "content" (its bytes) or "stat" (path, size, date)
    max_seconds: float = MAX_SECONDS  # 0: no crop
    frame_dtype: str = "float16"  # how the store keeps frames: the same setting as `budget extract --frame-dtype`
    layer: int | None = None  # pick one layer of an 'all' feature entry
    precision: str = "fp32"
    store: str | None = None
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self):
        for key in ("features", "heads"):
            if not all(isinstance(v, str) for v in getattr(self, key)):
                raise BudgetError(f"{key} must be names (strings); got {list(getattr(self, key))!r}")
        for head in self.heads:
            head_spec(head)
        check_number("seeds", self.seeds, integer=True, minimum=1)
        check_number("n_folds", self.n_folds, integer=True, minimum=2)
        check_number("max_seconds", self.max_seconds, minimum=0)
        if self.layer is not None:
            check_number("layer", self.layer, integer=True, minimum=0)
        for key in ("corpus", "root", "classes", "store", "precision", "fold_file"):
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
        return EntrySettings(self.max_seconds or None, self.frame_dtype, self.file_identity)

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self), default=str))

    def digest(self) -> str:
        """A hash of the settings that change results (not the device or where things are stored)."""
        settings = self.to_dict()
        for key in ("store", "root", "file_identity"):  # where things are and how files are known: the same results
            settings.pop(key)
        if settings["fold_file"] is None:  # a setting added later enters only when set: older run folders still resume
            settings.pop("fold_file")
        if settings["frame_dtype"] == "float16":
            settings.pop("frame_dtype")
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
    problems: pd.DataFrame


def missing_classes_note(missing: dict[int, list[str]], names: dict[int, str]) -> str:
    """One sentence on held-out folds that lack a class, and what that does to their metrics."""
    listed = ", ".join(f"{names[fold]} (no {'/'.join(classes)})" for fold, classes in missing.items())
    return (f"held-out folds without every class: {listed}; a fold's UA and macro-F1 average over the classes it "
            "holds, and a class's recall over the folds that hold it")


def prepare(config: StudyConfig, log=print, strict: bool = False) -> StudyData:
    """Load and scan the corpus (fetching EmoDB when missing), assign folds, check the sizes against every fold.

    Bad audio files are left out, or with ``strict`` stop the study.
    """
    manifest = load_corpus(config.corpus, ensure_corpus(config.corpus, config.root, log), config.classes)
    scan = scan_audio(manifest, MIN_SECONDS)
    if strict:
        scan.raise_if_problems()
    usable = scan.usable
    if usable.empty:
        raise BudgetError(f"{config.corpus}: no usable audio")
    folds = read_fold_file(config.fold_file, usable) if config.fold_file else assign_folds(usable, config.n_folds)
    classes = class_order(usable["label"])
    plan = plan_sizes(parse_sizes(config.per_class, config.n, len(classes)), usable, folds)
    if not plan.sizes:
        raise BudgetError("no requested size can be supplied by every fold: " + "; ".join(plan.skipped))
    return StudyData(usable, classes, folds, fold_names(usable, folds), plan, scan.problems)


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
        return self.run_inputs(self.load_inputs(log, strict), log, check_convergence)

    def load_inputs(self, log=print, strict: bool = False) -> StudyInputs:
        """Scan the corpus, extract what the store lacks and load every feature set: what training needs."""
        config = self.config
        extractors = [parse_feature_spec(spec).configure(config.train.device, config.precision) for spec in config.features]
        pairs = self._pairs(extractors)
        data = prepare(config, log, strict)
        for note in [data.plan.note, *(f"skipped {s}" for s in data.plan.skipped)]:
            if note:
                log(note)
        if not data.problems.empty:
            log(f"{len(data.problems)} bad audio file(s) left out (see `budget corpus info`)")
        if missing := classes_missing(data.manifest, data.folds, data.classes):
            log(missing_classes_note(missing, data.fold_names))
        entries, loaded = self._load_features(extractors, data, log)
        return StudyInputs(data, loaded, entries, pairs)

    def run_inputs(self, inputs: StudyInputs, log=print, check_convergence: str = "none") -> pd.DataFrame:
        """Train and write results from loaded inputs (on this machine, or one with neither corpus nor store)."""
        config, data = self.config, inputs.data
        self._names = [*config.features, *(f"{a}+{t}" for a, t in inputs.pairs)]
        with self.folder.writing():
            self.folder.claim(config.digest(), config.to_dict())
            log(f"study folder: {self.run_dir} (running it again resumes)")
            if self.kept_products:
                log(f"this study started with {frame_products(config.train)} products and keeps them, although this "
                    "device would choose otherwise (bf16 = true or false in its config decides)")  # fmt: skip
            labels = data.manifest["label"].map({c: i for i, c in enumerate(data.classes)}).to_numpy()
            jobs = self._jobs(data, inputs.features, inputs.pairs, labels)
            log(f"training: {config.train.describe()}")
            self._train(jobs, RESULTS, config.train, data, log)
            if check_convergence != "none":
                doubled = [job.doubled(check_convergence) for job in jobs if head_spec(job.head).budgeted]
                which = "every size" if check_convergence == "all" else "the smallest and largest size and full"
                log(f"convergence check: {which} of each curve again, with twice the budget")
                self._train([job for job in doubled if job.runs], CONVERGENCE, config.train.doubled(), data, log)
            self._write_provenance(data, inputs.entries)
            results = self._table(RESULTS)
            if check_convergence != "none":
                self._table(CONVERGENCE)
        return results

    def _table(self, name: str) -> pd.DataFrame:
        """The finished runs of ``results`` or ``convergence`` in the configured order, written as one table."""
        table = sort_results(self.folder.finished(name), {"features": self._names, "head": list(self.config.heads)})
        self.folder.write_table(table, name)
        return table

    def _jobs(self, data: StudyData, loaded: dict[str, FeatureSet], pairs, labels: np.ndarray) -> list[Job]:
        """One job per (features, head): every size, fold and seed of it."""
        jobs = []
        for head in self.config.heads:
            if head_spec(head).inputs == PAIR:
                inputs_by_name = {f"{a}+{t}": {"audio": loaded[a], "text": loaded[t]} for a, t in pairs}
            else:
                inputs_by_name = {spec: {"single": features} for spec, features in loaded.items()}
            for name, inputs in inputs_by_name.items():
                keep = data.manifest["utt_id"].isin(set.intersection(*(set(f.utt_ids) for f in inputs.values()))).to_numpy()
                inputs = {part: f.select(data.manifest["utt_id"].to_numpy()[keep]) for part, f in inputs.items()}
                digest = inputs_digest(data.manifest[keep], data.folds[keep], inputs)
                jobs.append(Job(name, head, inputs, labels[keep], self._runs(data, keep), digest))
        return jobs

    def _train(self, jobs: list[Job], table: str, train: TrainConfig, data: StudyData, log) -> None:
        """Train what ``table``'s parts lack, one part file per chunk, with one progress bar and ETA for everything."""
        finished = self.folder.current(table, {(job.name, job.head): job.digest for job in jobs}, log)
        done = {tuple(str(v) for v in row) for row in finished[RESULT_KEY].itertuples(index=False)}
        todo = [job.without(done) for job in jobs]
        todo = [job for job in todo if job.runs]
        if not todo:
            return
        n_classes = len(data.classes)
        uploaded: dict[str, DeviceFeatures] = {}
        models = [
            head_spec(job.head).cost_model(job.inputs, job.labels, job.runs, n_classes, train,
                                           self._uploaded(job, train, uploaded))
            for job in todo
        ]  # fmt: skip
        by_head: dict[str, float] = {}
        for model, job in zip(models, todo, strict=True):
            by_head[job.head] = by_head.get(job.head, 0.0) + _seconds(model, head_spec(job.head), job.runs, train)
        total = sum(by_head.values())
        heads = ", ".join(f"{head} {_duration(seconds)}" for head, seconds in by_head.items())
        log(f"estimated training time: {_duration(total)} for {sum(len(j.runs) for j in todo)} runs ({heads}; "
            "each head timed at its smallest and largest size)")  # fmt: skip
        with progress_bar(max(total, 1e-9), "training", unit="s") as advance:
            for job, model in zip(todo, models, strict=True):
                spec = head_spec(job.head)
                for step_count in sorted({spec.units(run, train) for run in job.runs}):
                    group = [run for run in job.runs if spec.units(run, train) == step_count]
                    size = spec.chunk(job.single, train, n_classes)
                    for start in range(0, len(group), size):
                        chunk = group[start : start + size]
                        estimate = _seconds(model, spec, chunk, train)
                        cost = estimate / sum(spec.units(run, train) for run in chunk)
                        tick = lambda n, cost=cost: advance(n * cost)  # noqa: E731
                        started = time.perf_counter()
                        predictions = self._fit(job, chunk, n_classes, train, tick, uploaded.get(job.name))
                        seconds = time.perf_counter() - started
                        self._write_part(table, job, chunk, predictions, data, (seconds, estimate), train)

    def _uploaded(self, job: Job, train: TrainConfig, uploaded: dict[str, DeviceFeatures]) -> DeviceFeatures | None:
        """The job's features on the training device, uploaded once per feature set."""
        if not head_spec(job.head).uploads:
            return None
        if job.name not in uploaded:
            import torch

            uploaded[job.name] = DeviceFeatures.upload(job.single, torch.device(train.device))
        return uploaded[job.name]

    def _fit(self, job: Job, runs: list[Run], n_classes: int, train: TrainConfig, advance, uploaded) -> list[np.ndarray]:
        return self.trainer(job.head, job.inputs, job.labels, runs, n_classes, train, advance=advance, uploaded=uploaded)

    def _pairs(self, extractors) -> list[tuple[str, str]]:
        """(audio, text) spec pairs for bimodal heads; an error, before any work, when a modality is missing."""
        audio = [e.spec for e in extractors if e.modality == "audio"]
        text = [e.spec for e in extractors if e.modality == "text"]
        pairs = [(a, t) for a in audio for t in text]
        bimodal = [h for h in self.config.heads if head_spec(h).inputs == PAIR]
        if bimodal and not pairs:
            raise BudgetError(f"{bimodal[0]} needs an audio and a text feature set, e.g. --features hf:MODEL,text:MODEL")
        return pairs

    def _load_features(self, extractors, data: StudyData, log) -> tuple[dict[str, str], dict[str, FeatureSet]]:
        """Extract what the store lacks, then load every feature set; return store entries and feature sets."""
        store = FeatureStore(self.config.store)
        entries, loaded = {}, {}
        stored = asdict(self.config.entry_settings())
        reports = store.extract_all(extractors, data.manifest, **stored)
        for extractor, report in zip(extractors, reports, strict=True):
            if report.extracted:
                log(f"extracted {extractor.spec} for {report.extracted} utterances ({report.seconds:.0f} s)")
            entries[extractor.spec] = report.entry.name
            features = store.load(extractor, data.manifest, layer=self.config.layer, **stored)
            if features.missing:
                log(f"{extractor.spec}: {len(features.missing)} utterance(s) have no features and are left out")
            loaded[extractor.spec] = features
        return entries, loaded

    def _runs(self, data: StudyData, keep: np.ndarray) -> list[Run]:
        """Every (size, fold, seed) run: balanced subsets nested within a (fold, seed), the whole fold for ``full``."""
        folds = data.folds.to_numpy()[keep]
        labels = data.manifest["label"].to_numpy()[keep]
        runs = []
        for size in data.plan.sizes:
            for fold in sorted(set(folds)):
                train_positions = np.flatnonzero(folds != fold)
                test_positions = np.flatnonzero(folds == fold)
                for seed in range(self.config.seeds):
                    subset = balanced_subset(labels[train_positions], size, seed, int(fold))
                    runs.append(Run(int(fold), seed, size, train_positions[subset], test_positions))
        return runs

    def _write_part(self, table: str, job: Job, runs, predictions, data, seconds: tuple[float, float],
                    train: TrainConfig) -> None:  # fmt: skip
        """One part file for a trained chunk; ``seconds`` is (measured, estimated) for the whole chunk."""
        measured, estimated = seconds
        rows = []
        for run, predicted in zip(runs, predictions, strict=True):
            rows.append(
                {
                    "features": job.name,
                    "head": job.head,
                    "size": str(run.size),
                    "n_train": len(run.train),
                    "fold": run.fold,
                    "fold_name": data.fold_names[run.fold],
                    "seed": run.seed,
                    **run_metrics(job.labels[run.test], predicted, data.classes),
                    "schedule": head_spec(job.head).schedule(train),
                    "steps": head_spec(job.head).steps(train, len(run.train)),  # L-BFGS: its iteration cap
                    "train_seconds": measured / len(runs),
                    "estimated_seconds": estimated / len(runs),  # the cost model's price, to check the ETA against
                    "inputs": job.digest,
                }
            )
        self.folder.write_part(rows, table)

    def _write_provenance(self, data: StudyData, entries: dict[str, str]) -> None:
        manifest_csv = data.manifest[["utt_id", "label", "group"]].to_csv(index=False).encode()
        provenance = {
            "corpus": get_adapter(self.config.corpus).name,
            "classes": data.classes,
            "utterances": len(data.manifest),
            "class_counts": data.manifest["label"].value_counts().reindex(data.classes).astype(int).to_dict(),
            "groups": int(data.manifest["group"].nunique()),
            "folds": {str(k): v for k, v in data.fold_names.items()},
            "manifest_sha256": hashlib.sha256(manifest_csv).hexdigest(),
            "bad_audio_files": len(data.problems),
            "sizes": [str(s) for s in data.plan.sizes],
            "skipped_sizes": data.plan.skipped,
            "feature_store": str(FeatureStore(self.config.store).root),
            "feature_entries": entries,
            "seeds": list(range(self.config.seeds)),
            "device": self.config.train.device,
            "frame_products": frame_products(self.config.train),
            "versions": package_versions(),
            "git_revision": git_revision(),
            "machine": f"{platform.machine()} {platform.processor()} {os.cpu_count()} cores, Python {platform.python_version()}",
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        self.folder.write_provenance(provenance)


@dataclass
class StudyInputs:
    """A study's corpus and loaded features: everything training needs, and picklable."""

    data: StudyData
    features: dict[str, FeatureSet]
    entries: dict[str, str]  # feature spec -> store entry
    pairs: list[tuple[str, str]]  # (audio, text) specs for bimodal heads


@dataclass
class Job:
    """Every run of one head on one feature set (or audio + text pair)."""

    name: str
    head: str
    inputs: dict[str, FeatureSet]
    labels: np.ndarray
    runs: list[Run]
    digest: str = ""  # identity of the job's inputs (inputs_digest): results trained on other inputs are stale

    @property
    def single(self) -> FeatureSet | None:
        return self.inputs.get("single")

    def without(self, done: set[tuple[str, ...]]) -> Job:
        keep = [r for r in self.runs if (self.name, self.head, str(r.size), str(r.fold), str(r.seed)) not in done]
        return replace(self, runs=keep)

    def doubled(self, which: str) -> Job:
        """The runs the convergence check repeats: all, or those of :func:`budget.sampling.curve_ends` (``ends``)."""
        if which == "all":
            return self
        ends = curve_ends({r.size for r in self.runs})
        return replace(self, runs=[r for r in self.runs if r.size in ends])


def inputs_digest(manifest: pd.DataFrame, folds: pd.Series, inputs: dict[str, FeatureSet]) -> str:
    """What a job's results depend on besides the settings: its utterances, labels, groups, folds and features.

    Features enter by content (lengths and pooled statistics), so changed audio,
    model weights or extraction settings change the digest even where the store's
    entry name or a file's size and date do not.
    """
    digest = hashlib.sha256(manifest[["utt_id", "label", "group"]].assign(fold=folds.to_numpy()).to_csv(index=False).encode())
    for part, features in sorted(inputs.items()):
        digest.update(part.encode())
        digest.update(np.ascontiguousarray(features.lengths, dtype=np.int64).tobytes())
        digest.update(np.ascontiguousarray(features.mean, dtype=np.float32).tobytes())
    return digest.hexdigest()[:16]


def _seconds(model: CostModel, spec: HeadSpec, runs: list[Run], train: TrainConfig) -> float:
    """What ``runs`` of one head cost by its model: every run's units at its own size's price."""
    return sum(model.unit_seconds(len(run.train)) * spec.units(run, train) for run in runs)


def _duration(seconds: float) -> str:
    if seconds < 9.5:
        return f"{seconds:.1f} s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min" if seconds < 600 else f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def package_versions() -> dict[str, str]:
    versions = {}
    for name in ("budget-ser", "torch", "transformers", "scikit-learn", "numpy", "pandas", "pyAudioAnalysis"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def git_revision() -> str | None:
    """The source tree's commit, when budget runs from a git checkout."""
    source = Path(__file__).resolve().parent.parent
    try:
        revision = subprocess.run(
            ["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(source), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return revision + ("+dirty" if dirty else "")


__all__ = ["Study", "StudyConfig", "default_run_dir", "prepare"]
