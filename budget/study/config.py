"""Everything that defines a study (:class:`StudyConfig`): its keys in a TOML file and the Python API, its options
on the command line (each declared once, beside the setting), its checks, and the digest that names its folder."""

from __future__ import annotations

import hashlib
import json
import os
import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from budget.corpora import CORPORA
from budget.engine.config import TrainConfig
from budget.engine.device import with_products
from budget.errors import BudgetError, check_number, check_path
from budget.features.base import PRECISIONS
from budget.features.distributed import LOCAL, Where
from budget.features.entries import FRAME_DTYPES, EntrySettings
from budget.features.layers import WEIGHTED, layer_of, read_layers
from budget.folds import N_FOLDS
from budget.registry import ACOUSTIC_HEADS, REGISTRY, head_spec
from budget.sampling import Size, read_sizes, read_totals
from budget.settings import option

#: The default pretrained encoder: a self-supervised successor of the paper's wav2vec.
DEFAULT_ENCODER = "hf:microsoft/wavlm-base-plus"
#: The heads a command trains when none are named: one head's curve, every acoustic head compared at one size, or
#: a fitted head retrained round by round while clips are acquired.
COMMAND_HEADS = {"curve": ("mlp_pool",), "compare": ACOUSTIC_HEADS, "acquire": ("mean_pool",)}
#: Settings that do not change a result: where things are, how audio files are known, where and how runs execute.
#: Training settings only fitted attention reads, added after run folders' digests held ``attention_window``.
ATTENTION_SETTINGS = ("attention_segments", "attention_iterations")


NOT_IN_DIGEST = ("store", "root", "file_identity", "executor", "extract_batch", "max_memory", "shared_store", "workers")


@dataclass(frozen=True)
class StudyConfig:
    """Everything that defines a study.  TOML files under ``experiments/`` hold these keys; the Python API takes
    them as keyword arguments; a field declared with :func:`budget.settings.option` is a command-line option too."""

    corpus: str = field(default="emodb", metadata=option("--corpus", f"Corpus adapter: {', '.join(CORPORA)} (default emodb).", "-c"))
    root: str | None = field(default=None, metadata=option(
        "--root", "The corpus folder (or CSV file); default: <data dir>/<corpus>, see BUDGET_DATA_DIR."))
    classes: str | None = field(default=None, metadata=option(
        "--classes", "Classes to keep, e.g. neutral,happy,sad,angry; merge with +, e.g. happy+excited; presets "
        "iemocap4, basic4; 'all'. Default: the corpus's own (IEMOCAP: iemocap4)."))
    features: tuple[str, ...] = field(default=("lld", DEFAULT_ENCODER), metadata=option(
        "--features", "Feature specs, comma-separated or repeated: lld, hf:<model>[:layer|all|weighted], "
        "wav2vec1:<ckpt.pt>, text:<model> (default: lld and hf:microsoft/wavlm-base-plus).", "-f"))
    heads: tuple[str, ...] | None = field(default=None, metadata=option(
        "--heads", "Heads: mean_pool, meanmax_pool, attn_pool, mlp_pool, logreg; align_lstm (with _audio, _text "
        "ablations) on an audio and a text feature set (default: mlp_pool for curve, every acoustic head for compare).",
        "-m", aliases=("--model", "--models")))
    per_class: tuple[Size, ...] | None = field(default=None, metadata=option(
        "--per-class", "Training sizes per class, e.g. 5,10,20,40,full (default: doubling from 125, or four up to "
        "what every fold supplies, and full)."))
    n: tuple[int, ...] | None = field(default=None, metadata=option(
        "--n", "Or training sizes in total, e.g. 500,1000, divided by the classes."))
    seeds: int = field(default=3, metadata=option("--seeds", "Seeds per size and fold (default 3)."))
    n_folds: int = field(default=N_FOLDS, metadata=option(
        "--folds", "Speaker-independent folds when a corpus has more than 10 groups (default 5)."))
    fold_file: str | None = field(default=None, metadata=option(
        "--fold-file", "A CSV of utt_id (or group) and fold: a published fold design."))
    file_identity: str = field(default=EntrySettings.file_identity, metadata=option(
        "--identity", "Know audio files by content (a hash of their bytes, default) or stat (path, size, date: no "
        "reading, for very large corpora).", aliases=("--file-identity",)))
    max_seconds: float = field(default=EntrySettings.max_seconds, metadata=option(
        "--max-seconds", "Crop each utterance to its first seconds (default 5; 0: no crop)."))
    frame_dtype: str = field(default=EntrySettings.frame_dtype, metadata=option(
        "--frame-dtype", f"Stored frames: {' (default) or '.join(FRAME_DTYPES)}."))
    layers: tuple[int | str, ...] | None = field(default=None, metadata=option(
        "--layers", "Layers of each hf:<model>:all feature set, each a feature set of its own: indices, last, or all "
        "(e.g. 2,4,last); read from the one extraction."))
    precision: str = field(default=PRECISIONS[0], metadata=option(
        "--precision", f"Precision the encoders run in: {', '.join(PRECISIONS)} (default {PRECISIONS[0]})."))
    extract_batch: int | None = field(default=None, metadata=option(
        "--extract-batch", "Utterances per extraction batch (default 16 on CUDA, 8 on a CPU)."))
    max_memory: float | None = field(default=None, metadata=option(
        "--max-memory", "GB a study's features and training may take (default: what the machine has available); "
        "beyond it, frames stay in the store and are read as training asks, fewer workers start and evaluation "
        "batches shrink (the same results); a study that needs more even so stops before loading, saying why."))
    shared_store: bool = field(default=False, metadata=option(
        "--shared-store", "With --executor ray: every worker sees the feature store's files, so a task reads the "
        "frames its runs need from them rather than receiving every frame."))
    store: str | None = field(default=None, metadata=option(
        "--store", "Feature store folder; default: $BUDGET_STORE_DIR or ~/.cache/budget/features."))
    executor: Where = field(default=LOCAL, metadata=option(
        "--executor", "Where runs train and batches extract: local (this process, default), ray (a local Ray "
        "cluster) or ray:ADDRESS (ray:auto joins a running one); the results are the same."))
    workers: int | None = field(default=None, metadata=option(
        "--workers", "Processes that train side by side on a CPU, sharing torch's threads equally (default: one per "
        "thread, as many as free memory allows; 1: this process alone); the results are the same."))
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self):
        object.__setattr__(self, "executor", Where.parse(self.executor))
        for key in ("features", "heads"):
            if getattr(self, key) is not None and not all(isinstance(v, str) for v in getattr(self, key)):
                raise BudgetError(f"{key} must be names (strings); got {list(getattr(self, key))!r}")
        for head in self.heads or ():
            head_spec(head)
        check_number("seeds", self.seeds, integer=True, minimum=1)
        check_number("n_folds", self.n_folds, integer=True, minimum=2)
        check_number("max_seconds", self.max_seconds, minimum=0)
        if self.extract_batch is not None:
            check_number("extract_batch", self.extract_batch, integer=True, minimum=1)
        if self.max_memory is not None:
            check_number("max_memory", self.max_memory, minimum=0)
        if self.workers is not None:
            check_number("workers", self.workers, integer=True, minimum=1)
        object.__setattr__(self, "layers", read_layers(self.layers))
        if self.per_class is not None:
            object.__setattr__(self, "per_class", read_sizes(self.per_class))
        if self.n is not None:
            object.__setattr__(self, "n", read_totals(self.n))
        weighted = [spec for spec in self.features if layer_of(spec)[1] == WEIGHTED]
        if weighted and self.heads is not None and not any(head_spec(head).mixes_layers for head in self.heads):
            mixing = ", ".join(name for name, spec in REGISTRY.items() if spec.mixes_layers)
            raise BudgetError(f"{weighted[0]} needs a head that learns layer weights: {mixing}")
        for key in ("root", "store", "fold_file"):  # paths: str or os.PathLike, held as written
            if getattr(self, key) is not None:
                check_path(key, getattr(self, key))
                object.__setattr__(self, key, os.fspath(getattr(self, key)))
        for key in ("corpus", "classes", "precision"):
            if getattr(self, key) is not None and not isinstance(getattr(self, key), str):
                raise BudgetError(f"{key} must be a string; got {getattr(self, key)!r}")
        if self.precision not in PRECISIONS:
            raise BudgetError(f"precision must be one of {', '.join(PRECISIONS)}; got {self.precision!r}")
        self.entry_settings()  # the crop, frame dtype and file identity, checked where the store checks them
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
        """A copy with the given keys replaced (``None`` values are ignored); training keys go to ``train``.

        Values come as typed (a list or tuple, or one comma-separated string for ``features``, ``heads``,
        ``per_class``, ``n`` and ``layers``) and are read here, once.
        """
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
        train = replace(self.train, **{k: v for k, v in train_values.items() if v is not None})
        return replace(self, **values, train=train)

    def for_command(self, command: str) -> StudyConfig:
        """The configuration a command runs: its own heads (:data:`COMMAND_HEADS`) where none are named."""
        return self if self.heads is not None else replace(self, heads=COMMAND_HEADS[command])

    def entry_settings(self) -> EntrySettings:
        """How the study's features are stored: the same settings ``budget extract`` names its entries by."""
        return EntrySettings(self.max_seconds, self.frame_dtype, self.file_identity)

    def to_dict(self) -> dict:
        """The settings as a config file holds them (sizes as counts or ``"full"``, the executor as its spec)."""
        values = {spec.name: getattr(self, spec.name) for spec in fields(self)}
        values["train"] = asdict(self.train)
        values["per_class"] = None if self.per_class is None else [size.to_json() for size in self.per_class]
        values["executor"] = str(self.executor)
        return json.loads(json.dumps(values, default=str))

    def digest(self) -> str:
        """A hash of the settings that change results (not the device or where things are stored)."""
        if self.heads is None:
            raise BudgetError("a study's heads are chosen before its digest (StudyConfig.for_command)")
        settings = self.to_dict()
        for key in NOT_IN_DIGEST:
            settings.pop(key)
        defaults = StudyConfig()
        for key in ("fold_file", "frame_dtype", "layers"):  # at their defaults these stay out, so a
            if settings[key] == getattr(defaults, key):  # study's digest (and folder) does not move when one is added
                settings.pop(key)
        settings["train"].pop("device")
        settings["train"].pop("memory_mb")
        settings["train"].pop("eval_mb")
        if settings["train"]["cycles"] == 1:  # at its default it stays out, as it did before it was added
            settings["train"].pop("cycles")
        if not any(head_spec(head).scores_frames for head in self.heads):  # settings no head of the study reads:
            for key in ATTENTION_SETTINGS:  # out, with the one key they replaced, as digests held it before
                settings["train"].pop(key)
            settings["train"]["attention_window"] = 1
        settings["train"]["bf16"] = with_products(self.train).bf16  # the products decided, not "where fast"
        return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]
