"""Studies: a grid of runs (features x heads x sizes x folds x seeds) to one results table.

A study reads a corpus, extracts what the feature store lacks, draws
class-balanced subsets from the training folds, trains every head on every
feature set with runs that share a size trained together, and writes a tidy
table with one row per (features, head, size, fold, seed) into a run folder::

    runs/<name>/config.json       the resolved configuration
    runs/<name>/provenance.json   corpus counts, manifest checksum, store entries, versions, git revision
    runs/<name>/parts/*.parquet   results, one file per trained group (what makes a study resumable)
    runs/<name>/results.parquet   every finished run (and results.csv)

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
from dataclasses import asdict, dataclass, field, fields, replace
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import pandas as pd

from budget.analysis import size_order, sort_cells
from budget.audio import MAX_SECONDS, MIN_SECONDS, scan_audio
from budget.bimodal import train_bimodal_runs
from budget.corpora import get_adapter, load_corpus
from budget.corpora.fetch import ensure_corpus
from budget.errors import BudgetError
from budget.features import FeatureStore, parse_feature_spec
from budget.features.store import FeatureSet
from budget.folds import N_FOLDS, assign_folds, fold_names
from budget.heads import BIMODAL_HEADS, check_head
from budget.labels import class_order
from budget.metrics import run_metrics
from budget.sampling import FULL, SizePlan, balanced_subset, parse_sizes, plan_sizes
from budget.training import Run, TrainConfig, train_runs

RESULT_KEY = ["features", "head", "size", "fold", "seed"]
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
    max_seconds: float = MAX_SECONDS  # 0: no crop
    layer: int | None = None  # pick one layer of an 'all' feature entry
    precision: str = "fp32"
    store: str | None = None
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self):
        for head in self.heads:
            check_head(head)
        if self.seeds < 1:
            raise BudgetError(f"seeds must be at least 1; got {self.seeds}")
        if not self.features:
            raise BudgetError("a study needs at least one feature set")

    @classmethod
    def from_toml(cls, path: str | Path) -> StudyConfig:
        """Read a study configuration; unknown keys are an error."""
        try:
            data = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as error:
            raise BudgetError(f"cannot read config {path}: {error}") from error
        return cls().with_overrides(**data)

    def with_overrides(self, **values) -> StudyConfig:
        """A copy with the given keys replaced (``None`` values are ignored); training keys go to ``train``."""
        own = {f.name for f in fields(self)} - {"train"}
        train_keys = {f.name for f in fields(TrainConfig)}
        unknown = set(values) - own - train_keys - {"train"}
        if unknown:
            raise BudgetError(f"unknown study setting(s): {', '.join(sorted(unknown))}")
        train_values = {k: v for k, v in {**values.pop("train", {}), **values}.items() if k in train_keys}
        values = {k: v for k, v in values.items() if k in own and v is not None}
        for key in ("features", "heads", "per_class", "n"):
            if key in values and isinstance(values[key], str):
                values[key] = tuple(part.strip() for part in values[key].split(",") if part.strip())
            if key in values:
                values[key] = tuple(values[key])
        for key in ("per_class", "n"):  # "125" and 125 are the same size
            if key in values:
                values[key] = tuple(int(v) if str(v).strip().isdigit() else str(v).strip().lower() for v in values[key])
        train = replace(self.train, **{k: v for k, v in train_values.items() if v is not None})
        return replace(self, **values, train=train)

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self), default=str))

    def digest(self) -> str:
        """A hash of the settings that change results (not the device or where things are stored)."""
        settings = self.to_dict()
        for key in ("store", "root"):
            settings.pop(key)
        settings["train"].pop("device")
        settings["train"].pop("memory_mb")
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
    folds = assign_folds(usable, config.n_folds)
    classes = class_order(usable["label"])
    plan = plan_sizes(parse_sizes(config.per_class, config.n, len(classes)), usable, folds)
    if not plan.sizes:
        raise BudgetError("no requested size can be supplied by every fold: " + "; ".join(plan.skipped))
    return StudyData(usable, classes, folds, fold_names(usable, folds), plan, scan.problems)


def default_run_dir(command: str, config: StudyConfig) -> Path:
    """``runs/<command>-<corpus>-<digest>``: the same study resumes in the same folder."""
    return Path("runs") / f"{command}-{get_adapter(config.corpus).name}-{config.digest()}"


class Study:
    """One study in its run folder."""

    def __init__(self, config: StudyConfig, run_dir: str | Path):
        self.config = config
        self.run_dir = Path(run_dir)
        self.parts = self.run_dir / "parts"

    def _claim_folder(self) -> None:
        self.parts.mkdir(parents=True, exist_ok=True)
        config_file = self.run_dir / "config.json"
        if config_file.is_file():
            previous = json.loads(config_file.read_text())
            if previous.get("digest") != self.config.digest():
                raise BudgetError(
                    f"{self.run_dir} holds a study with other settings; choose another --run-dir or remove it"
                )
        else:
            config_file.write_text(json.dumps({"digest": self.config.digest(), **self.config.to_dict()}, indent=2))

    def finished(self) -> pd.DataFrame:
        """Every run finished so far (from the part files)."""
        files = sorted(self.parts.glob("*.parquet")) if self.parts.is_dir() else []
        if not files:
            return pd.DataFrame(columns=RESULT_KEY)
        return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)

    def run(self, log=print, strict: bool = False) -> pd.DataFrame:
        """Run what is not finished yet; write and return the full results table (``strict``: see :func:`prepare`)."""
        config = self.config
        extractors = [parse_feature_spec(spec).configure(config.train.device, config.precision) for spec in config.features]
        pairs = self._pairs(extractors)
        data = prepare(config, log, strict)
        for note in [data.plan.note, *(f"skipped {s}" for s in data.plan.skipped)]:
            if note:
                log(note)
        if not data.problems.empty:
            log(f"{len(data.problems)} bad audio file(s) left out (see `budget corpus info`)")
        self._claim_folder()
        log(f"study folder: {self.run_dir} (running it again resumes)")
        done = {tuple(str(v) for v in row) for row in self.finished()[RESULT_KEY].itertuples(index=False)}
        entries, loaded = self._load_features(extractors, data, log)
        labels = data.manifest["label"].map({c: i for i, c in enumerate(data.classes)}).to_numpy()
        for head in config.heads:
            if head in BIMODAL_HEADS:
                inputs_by_name = {f"{a}+{t}": {"audio": loaded[a], "text": loaded[t]} for a, t in pairs}
            else:
                inputs_by_name = {spec: {"single": features} for spec, features in loaded.items()}
            for name, inputs in inputs_by_name.items():
                keep = data.manifest["utt_id"].isin(set.intersection(*(set(f.utt_ids) for f in inputs.values()))).to_numpy()
                inputs = {part: f.select(data.manifest["utt_id"].to_numpy()[keep]) for part, f in inputs.items()}
                for size, runs in self._groups(data, keep):
                    todo = [r for r in runs if (name, head, str(size), str(r.fold), str(r.seed)) not in done]
                    if todo:
                        started = time.perf_counter()
                        predictions = self._train(head, inputs, labels[keep], todo, len(data.classes))
                        seconds = time.perf_counter() - started
                        self._write_part(name, head, size, todo, predictions, labels[keep], data, seconds)
        self._write_provenance(data, entries)
        results = self.finished()
        results = results.sort_values(RESULT_KEY, key=self._sort_key).reset_index(drop=True)
        results.to_parquet(self.run_dir / "results.parquet", index=False)
        results.to_csv(self.run_dir / "results.csv", index=False)
        return results

    def _pairs(self, extractors) -> list[tuple[str, str]]:
        """(audio, text) spec pairs for bimodal heads; an error, before any work, when a modality is missing."""
        audio = [e.spec for e in extractors if e.modality == "audio"]
        text = [e.spec for e in extractors if e.modality == "text"]
        pairs = [(a, t) for a in audio for t in text]
        bimodal = [h for h in self.config.heads if h in BIMODAL_HEADS]
        if bimodal and not pairs:
            raise BudgetError(f"{bimodal[0]} needs an audio and a text feature set, e.g. --features hf:MODEL,text:MODEL")
        self._names = [e.spec for e in extractors] + [f"{a}+{t}" for a, t in pairs]
        return pairs

    def _load_features(self, extractors, data: StudyData, log) -> tuple[dict[str, str], dict[str, FeatureSet]]:
        """Extract what the store lacks, then load every feature set; return store entries and feature sets."""
        store = FeatureStore(self.config.store)
        max_seconds = self.config.max_seconds or None
        entries, loaded = {}, {}
        for extractor in extractors:
            report = store.extract(extractor, data.manifest, max_seconds=max_seconds)
            if report.extracted:
                log(f"extracted {extractor.spec} for {report.extracted} utterances ({report.seconds:.0f} s)")
            entries[extractor.spec] = report.entry.name
            features = store.load(extractor, data.manifest, layer=self.config.layer, max_seconds=max_seconds)
            if features.missing:
                log(f"{extractor.spec}: {len(features.missing)} utterance(s) have no features and are left out")
            loaded[extractor.spec] = features
        return entries, loaded

    def _train(self, head: str, inputs: dict[str, FeatureSet], labels, runs, n_classes) -> list[np.ndarray]:
        if head in BIMODAL_HEADS:
            return train_bimodal_runs(head, inputs.get("audio"), inputs.get("text"), labels, runs, n_classes, self.config.train)
        return train_runs(head, inputs["single"], labels, runs, n_classes, self.config.train)

    def _sort_key(self, column: pd.Series) -> pd.Series:
        """Features and heads in the configured order, sizes ascending with ``full`` last."""
        order = {"features": self._names, "head": self.config.heads}.get(column.name)
        if order is not None:
            return column.map({name: i for i, name in enumerate(order)})
        return column.map(size_order) if column.name == "size" else column

    def _groups(self, data: StudyData, keep: np.ndarray) -> list[tuple[object, list[Run]]]:
        """Runs grouped so a group shares its training-set size: balanced sizes across folds, full per fold."""
        folds = data.folds.to_numpy()[keep]
        labels = data.manifest["label"].to_numpy()[keep]
        groups: list[tuple[object, list[Run]]] = []
        for size in data.plan.sizes:
            runs = []
            for fold in sorted(set(folds)):
                train_positions = np.flatnonzero(folds != fold)
                test_positions = np.flatnonzero(folds == fold)
                for seed in range(self.config.seeds):
                    subset = balanced_subset(labels[train_positions], size, seed)
                    runs.append(Run(int(fold), seed, size, train_positions[subset], test_positions))
            if size == FULL:
                by_length: dict[int, list[Run]] = {}
                for run in runs:
                    by_length.setdefault(len(run.train), []).append(run)
                groups += [(size, group) for group in by_length.values()]
            else:
                groups.append((size, runs))
        return groups

    def _write_part(self, spec, head, size, runs, predictions, labels, data, seconds) -> None:
        rows = []
        for run, predicted in zip(runs, predictions, strict=True):
            rows.append(
                {
                    "features": spec,
                    "head": head,
                    "size": str(size),
                    "per_class": np.nan if size == FULL else int(size),
                    "n_train": len(run.train),
                    "fold": run.fold,
                    "fold_name": data.fold_names[run.fold],
                    "seed": run.seed,
                    **run_metrics(labels[run.test], predicted, data.classes),
                    "train_seconds": seconds / len(runs),
                }
            )
        name = hashlib.sha1(json.dumps([spec, head, str(size), [(r.fold, r.seed) for r in runs]]).encode()).hexdigest()
        tmp = self.parts / f"{name[:16]}.parquet.tmp"
        pd.DataFrame(rows).to_parquet(tmp, index=False)
        os.replace(tmp, self.parts / f"{name[:16]}.parquet")

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
            "versions": package_versions(),
            "git_revision": git_revision(),
            "machine": f"{platform.machine()} {platform.processor()} {os.cpu_count()} cores, Python {platform.python_version()}",
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        (self.run_dir / "provenance.json").write_text(json.dumps(provenance, indent=2))


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


def summarise(results: pd.DataFrame) -> pd.DataFrame:
    """UA mean and std over folds and seeds per (features, head, size), in the results' order."""
    table = results.groupby(["features", "head", "size"], sort=False).agg(
        ua_mean=("ua", "mean"), ua_std=("ua", "std"), n_train=("n_train", "mean"), runs=("ua", "size")
    )
    return sort_cells(table.reset_index())


__all__ = ["Study", "StudyConfig", "default_run_dir", "prepare", "summarise"]
