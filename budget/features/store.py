"""The feature store: extract once, reuse everywhere.

Layout of a store folder::

    <store>/<slug>-<key>/entry.json                  what the entry holds: spec, identity, dims
    <store>/<slug>-<key>/shards/<id>.frames.npy      frames of one batch, concatenated in time
    <store>/<slug>-<key>/shards/<id>.mean.npy        per-utterance mean over time (float32)
    <store>/<slug>-<key>/shards/<id>.max.npy         per-utterance max over time (float32)
    <store>/<slug>-<key>/shards/<id>.index.parquet   key, utt_id, offset, n_frames, ok, reason

**Keys.**  An entry's key hashes the extractor's full identity (model name,
checksum of its weight files, layer, precision, extractor version) and the
audio settings (sample rate, crop, frame dtype); an utterance's key hashes its
audio file's resolved path, size and modification time (or, with
``utterance_identity="content"``, the file's bytes), or for text features
the transcript itself.  Changing any of these never serves stale features:
a changed setting is a new entry, a changed file a new key.

**Atomicity.**  Each batch becomes one shard.  Its arrays are written under
temporary names and renamed into place, and its index is renamed last: a shard
without an index does not exist for readers, and is swept away by the next
writer.  An interrupted extraction (Ctrl-C, kill -9) therefore loses only the
batch in flight, and running it again continues where it stopped.  One writer
at a time holds the entry's lock file.

**Frames in float16.**  Frames are stored as float16 by default (pooled
statistics stay float32, computed before rounding).  Rounding to nearest gives
``|x16 - x| <= max(|x| * 2**-11, 2**-25)``: a relative error of at most
4.9e-4 for ``|x| >= 2**-14``; values beyond +-65504 do not fit, and the store
refuses them (use ``frame_dtype="float32"``).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

from budget import files
from budget.audio import MAX_SECONDS, MIN_SECONDS, SAMPLE_RATE, load_audio
from budget.errors import AudioError, BudgetError, ModelLoadError, check_number
from budget.features.base import FeatureExtractor, length_batches
from budget.progress import progress_bar

STORE_ENV = "BUDGET_STORE_DIR"
FRAME_DTYPES = ("float16", "float32")
FLOAT16_MAX = float(np.finfo(np.float16).max)
_INDEX_COLUMNS = ["key", "utt_id", "offset", "n_frames", "ok", "reason"]


def default_store_dir() -> Path:
    """``$BUDGET_STORE_DIR``, else ``$XDG_CACHE_HOME/budget/features`` (``~/.cache/budget/features``)."""
    if os.environ.get(STORE_ENV):
        return Path(os.environ[STORE_ENV]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "budget" / "features"


@dataclass(frozen=True)
class ExtractionReport:
    """What one extraction run did."""

    spec: str
    entry: Path
    requested: int
    cached: int
    extracted: int
    failures: pd.DataFrame  # utt_id, reason: this run's and earlier runs' failures among the requested
    seconds: float
    audio_seconds: float

    @property
    def utterances_per_second(self) -> float:
        return self.extracted / self.seconds if self.seconds > 0 else float("nan")

    @property
    def real_time_factor(self) -> float:
        """Processing time over audio duration (lower is faster)."""
        return self.seconds / self.audio_seconds if self.audio_seconds > 0 else float("nan")


@dataclass
class FeatureSet:
    """Features of a manifest's utterances, in manifest order, ready for training.

    ``frames[offsets[i] : offsets[i] + lengths[i]]`` is utterance ``i``;
    ``mean`` and ``max`` are its pooled statistics.  Utterances with no
    features (failed or never extracted) are left out and named in ``missing``.
    """

    spec: str
    utt_ids: np.ndarray
    lengths: np.ndarray
    offsets: np.ndarray
    frames: np.ndarray
    mean: np.ndarray
    max: np.ndarray
    layer_names: list[str] | None = None
    missing: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.utt_ids)

    @property
    def dim(self) -> int:
        return int(self.frames.shape[-1])

    def sequence(self, i: int) -> np.ndarray:
        """The frames of utterance ``i``."""
        return self.frames[self.offsets[i] : self.offsets[i] + self.lengths[i]]

    def select(self, utt_ids) -> FeatureSet:
        """The features of ``utt_ids``, in that order (each must be present)."""
        position = {u: i for i, u in enumerate(self.utt_ids)}
        rows = np.array([position[u] for u in utt_ids], dtype=np.int64)
        lengths = self.lengths[rows]
        pieces = [self.frames[self.offsets[i] : self.offsets[i] + self.lengths[i]] for i in rows]
        return FeatureSet(
            spec=self.spec,
            utt_ids=self.utt_ids[rows],
            lengths=lengths,
            offsets=np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64),
            frames=np.concatenate(pieces) if pieces else self.frames[:0],
            mean=self.mean[rows],
            max=self.max[rows],
            layer_names=self.layer_names,
        )


#: How an audio file is known: by path, size and modification time (cheap), or by a hash of its bytes (survives
#: ``cp -p`` and ``touch -r``, which keep size and date while changing content).
FILE_IDENTITIES = ("stat", "content")
#: The arrays of one shard, each in ``<shard>.<name>.npy``.
SHARD_ARRAYS = ("frames", "mean", "max")
#: How a failure of the extractor itself (not of the audio) begins: such utterances are tried again.
EXTRACTOR_FAILED = "extractor failed"


class _Entry:
    """One extractor configuration's folder in the store."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.shards = folder / "shards"

    @contextmanager
    def lock(self) -> Iterator[None]:
        self.shards.mkdir(parents=True, exist_ok=True)
        with (self.folder / ".lock").open("w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise BudgetError(f"another extraction is writing {self.folder}; wait for it to finish") from None
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def meta(self) -> dict:
        return files.read_json(self.folder / "entry.json")

    def described(self) -> bool:
        """Whether entry.json knows the frame shape: at least one utterance was extracted."""
        return (self.folder / "entry.json").is_file() and self.meta()["frame_shape"] is not None

    def committed(self) -> list[str]:
        return sorted(p.name.removesuffix(".index.parquet") for p in self.shards.glob("*.index.parquet"))

    def sweep(self) -> None:
        """Remove what a killed writer left (temporary files, shards without an index) and damaged shards."""
        committed = set(self.committed())
        for shard in sorted(committed):
            if self._read_shard_index(shard) is None:
                (self.shards / f"{shard}.index.parquet").unlink()  # uncommitted: its utterances are extracted again
                committed.discard(shard)
        for path in self.shards.iterdir():
            shard = path.name.split(".")[0]
            if path.name.endswith(".tmp") or shard not in committed:
                path.unlink()

    def _read_shard_index(self, shard: str) -> pd.DataFrame | None:
        """A shard's index, or None when the shard is damaged: an index or array file cut short or missing."""
        try:
            table = pd.read_parquet(self.shards / f"{shard}.index.parquet")
            frames, mean, maximum = (np.load(self.shards / f"{shard}.{part}.npy", mmap_mode="r") for part in SHARD_ARRAYS)
        except (OSError, ValueError):  # pyarrow's ArrowInvalid and numpy's short-file errors are ValueErrors
            return None
        if len(mean) != len(table) or len(maximum) != len(table) or len(frames) != int(table["n_frames"].sum()):
            return None
        return table

    def index(self) -> pd.DataFrame:
        """Every committed, undamaged utterance (the latest shard wins for a repeated key), with its shard."""
        tables = []
        for shard in self.committed():
            table = self._read_shard_index(shard)
            if table is not None:
                tables.append(table.assign(shard=shard, row=np.arange(len(table))))
        if not tables:
            return pd.DataFrame(columns=[*_INDEX_COLUMNS, "shard", "row"])
        return pd.concat(tables, ignore_index=True).drop_duplicates("key", keep="last").set_index("key")

    def write_shard(self, keys, utt_ids, outputs: list[np.ndarray | None], reasons: list[str], dtype: str) -> None:
        """Commit one batch: arrays first, index last, each by atomic rename."""
        shard = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
        good = [o for o in outputs if o is not None]
        lengths = [0 if o is None else len(o) for o in outputs]
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        # Shape of one frame; a batch where everything failed stores empty placeholders.
        frame_shape = good[0].shape[1:] if good else (0,)
        frames = np.concatenate(good) if good else np.zeros((0, *frame_shape), np.float32)
        if dtype == "float16" and frames.size and np.abs(frames).max() > FLOAT16_MAX:
            raise BudgetError(
                f"feature values exceed the float16 range (+-{FLOAT16_MAX:g}); "
                f"store them as float32 (--frame-dtype float32)"
            )
        pooled_mean = np.stack([_pool(o, frame_shape, np.mean) for o in outputs]).astype(np.float32)
        pooled_max = np.stack([_pool(o, frame_shape, np.max) for o in outputs]).astype(np.float32)
        for suffix, array in zip(SHARD_ARRAYS, (frames.astype(dtype), pooled_mean, pooled_max), strict=True):
            files.write_array(self.shards / f"{shard}.{suffix}.npy", array)
        index = pd.DataFrame(
            {
                "key": keys,
                "utt_id": utt_ids,
                "offset": offsets,
                "n_frames": np.asarray(lengths, dtype=np.int64),
                "ok": [o is not None for o in outputs],
                "reason": reasons,
            }
        )
        files.write_parquet(self.shards / f"{shard}.index.parquet", index)


@dataclass
class _Target:
    """One entry an extraction writes: its extractor, what it lacks, and which layer of a shared pass is its own."""

    extractor: FeatureExtractor
    entry: _Entry
    identity: dict
    keys: list[str]
    todo: list[int]
    column: int | None  # its layer's position in a shared pass's output; None: the output is its own
    known: pd.DataFrame | None


def _to_extract(keys: list[str], known: pd.DataFrame | None) -> list[int]:
    """Positions of keys not stored yet, or whose extractor failed (out of memory, a bad checkpoint): retried.

    Audio that cannot be used stays recorded as such: its key changes when the file does.
    """
    if known is None:
        return list(range(len(keys)))
    settled = (known["ok"] == True) | ~known["reason"].astype(str).str.startswith(EXTRACTOR_FAILED)  # noqa: E712
    stored = set(known.index[settled.to_numpy()])
    return [i for i, key in enumerate(keys) if key not in stored]


def _pool(frames: np.ndarray | None, frame_shape: tuple[int, ...], reduce) -> np.ndarray:
    """Mean or max over time; zeros for an utterance with no frames (empty text) or no features."""
    if frames is None or len(frames) == 0:
        return np.zeros(frame_shape, np.float32)
    return reduce(frames.astype(np.float32), axis=0)


def _slug(spec: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", Path(spec).name if "/" in spec else spec).strip("-")[:40] or "features"


class FeatureStore:
    """An on-disk store of frame-level features, keyed by extractor and utterance identity."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root).expanduser() if root is not None else default_store_dir()

    # -- identities --------------------------------------------------------------------------

    @staticmethod
    def entry_identity(
        extractor: FeatureExtractor, max_seconds: float | None, frame_dtype: str, utterance_identity: str
    ) -> dict:
        """Everything an entry's features depend on."""
        identity = {"extractor": extractor.identity(), "frame_dtype": frame_dtype}
        if extractor.modality == "audio":
            identity["audio"] = {
                "sample_rate": SAMPLE_RATE,
                "max_seconds": max_seconds,
                "min_seconds": MIN_SECONDS,
                "utterance_identity": utterance_identity,
            }
        return identity

    def _entry(self, extractor, max_seconds, frame_dtype, utterance_identity) -> tuple[dict, _Entry]:
        """An extractor configuration's identity and its folder in this store."""
        if max_seconds is not None:
            check_number("max_seconds", max_seconds, minimum=0)
            if max_seconds == 0:
                raise BudgetError("max_seconds must be positive (None keeps whole files)")
        identity = self.entry_identity(extractor, max_seconds, frame_dtype, utterance_identity)
        return identity, _Entry(self.entry_folder(extractor, identity))

    def entry_folder(self, extractor: FeatureExtractor, identity: dict) -> Path:
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]
        return self.root / f"{_slug(extractor.spec)}-{digest}"

    @staticmethod
    def utterance_keys(extractor: FeatureExtractor, manifest: pd.DataFrame, utterance_identity: str) -> list[str]:
        """One key per manifest row: audio file identity, or the transcript for text features."""
        keys = []
        for path, text in zip(manifest["path"], manifest["text"], strict=True):
            if extractor.modality == "text":
                blob = b"text\0" + str(text).encode()
            elif utterance_identity == "content":
                blob = b"content\0" + (Path(path).read_bytes() if Path(path).is_file() else str(path).encode())
            else:
                resolved = Path(path).resolve()
                try:
                    stat = resolved.stat()
                    blob = f"stat\0{resolved}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()
                except FileNotFoundError:
                    blob = f"missing\0{resolved}".encode()
            keys.append(hashlib.sha1(blob).hexdigest())
        return keys

    # -- writing -----------------------------------------------------------------------------

    def extract(
        self,
        extractor: FeatureExtractor,
        manifest: pd.DataFrame,
        *,
        max_seconds: float | None = MAX_SECONDS,
        batch_size: int | None = None,
        batch_seconds: float = 160.0,
        frame_dtype: str = "float16",
        utterance_identity: str = "stat",
    ) -> ExtractionReport:
        """Extract what the store lacks for ``manifest``; return what was done.

        Batches hold utterances of similar length (at most ``batch_size``
        utterances and ``batch_seconds`` of padded audio).  The default batch
        is 16 on CUDA and 8 on a CPU, where larger batches do not run faster
        (Whisper tiny.en on 2 cores: 3.9 utt/s one at a time, 3.3 in 16s).
        Utterances that fail (bad audio, too short for the model) are recorded
        and skipped.
        """
        (report,) = self.extract_all(
            [extractor], manifest, max_seconds=max_seconds, batch_size=batch_size, batch_seconds=batch_seconds,
            frame_dtype=frame_dtype, utterance_identity=utterance_identity,
        )  # fmt: skip
        return report

    def extract_all(
        self,
        extractors: list[FeatureExtractor],
        manifest: pd.DataFrame,
        *,
        max_seconds: float | None = MAX_SECONDS,
        batch_size: int | None = None,
        batch_seconds: float = 160.0,
        frame_dtype: str = "float16",
        utterance_identity: str = "stat",
    ) -> list[ExtractionReport]:
        """:meth:`extract` for several specs, in order; specs of one encoder that differ only in layer share one
        forward pass per batch (``hf:M:2`` and ``hf:M`` run the model once)."""
        if frame_dtype not in FRAME_DTYPES:
            raise BudgetError(f"frame dtype must be one of {', '.join(FRAME_DTYPES)}; got {frame_dtype!r}")
        if utterance_identity not in FILE_IDENTITIES:
            raise BudgetError(f"utterance identity must be 'stat' or 'content'; got {utterance_identity!r}")
        groups: dict[object, list[FeatureExtractor]] = {}
        for extractor in extractors:
            groups.setdefault(extractor.shared_pass_key() or id(extractor), []).append(extractor)
        reports: dict[int, ExtractionReport] = {}
        for group in groups.values():
            settings = (max_seconds, batch_size, batch_seconds, frame_dtype, utterance_identity)
            for extractor, report in zip(group, self._extract_group(group, manifest, *settings), strict=True):
                reports[id(extractor)] = report
        return [reports[id(extractor)] for extractor in extractors]

    def _extract_group(
        self, group, manifest, max_seconds, batch_size, batch_seconds, frame_dtype, utterance_identity
    ) -> list[ExtractionReport]:  # fmt: skip
        """Extract for extractors that share a forward pass: one run over what any of their entries lacks."""
        started = time.perf_counter()
        runner = group[0] if len(group) == 1 else group[0].sharing_pass(group)
        batch_size = batch_size or (16 if runner.device.startswith("cuda") else 8)
        keys = self.utterance_keys(runner, manifest, utterance_identity)  # one modality per group: read files once
        targets = []
        for column, extractor in enumerate(group):
            identity, entry = self._entry(extractor, max_seconds, frame_dtype, utterance_identity)
            known = entry.index() if entry.shards.is_dir() else None  # committed shards only: safe beside a writer
            column = None if len(group) == 1 else column
            targets.append(_Target(extractor, entry, identity, keys, _to_extract(keys, known), column, known))
        audio_seconds = 0.0
        if any(t.todo for t in targets):  # only a writer takes the lock: studies that find everything stored share it
            with ExitStack() as locks:
                for target in targets:
                    locks.enter_context(target.entry.lock())
                    target.entry.sweep()
                    target.todo = _to_extract(target.keys, target.entry.index())
                audio_seconds = self._run(targets, runner, manifest, max_seconds, batch_size, batch_seconds, frame_dtype)
                for target in targets:
                    target.known = target.entry.index()
                    if not target.entry.described() and len(target.known):
                        self._describe(target.entry, target.extractor, target.identity, None)  # all failed: listed
        reports = []
        for target in targets:
            requested = target.known.reindex(target.keys)
            failed = requested[requested["ok"] == False]  # noqa: E712 (pandas element-wise)
            reports.append(
                ExtractionReport(
                    spec=target.extractor.spec,
                    entry=target.entry.folder,
                    requested=len(target.keys),
                    cached=len(target.keys) - len(target.todo),
                    extracted=len(target.todo) - len(failed),
                    failures=pd.DataFrame({"utt_id": failed["utt_id"].to_numpy(), "reason": failed["reason"].to_numpy()}),
                    seconds=time.perf_counter() - started,
                    audio_seconds=audio_seconds,
                )
            )
        return reports

    @staticmethod
    def _describe(entry: _Entry, extractor: FeatureExtractor, identity: dict, frame_shape: tuple[int, ...] | None) -> None:
        """Write entry.json once the first output shows the frame shape (None while every utterance failed)."""
        meta = {
            "spec": extractor.spec,
            "identity": identity,
            "frame_shape": None if frame_shape is None else list(frame_shape),
            "layer_names": extractor.layer_names(),
            "frame_rate": extractor.frame_rate,
            "modality": extractor.modality,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        files.write_json(entry.folder / "entry.json", meta)

    @staticmethod
    def _input(extractor: FeatureExtractor, row, max_seconds):
        if extractor.modality == "text":
            return str(row["text"])
        return load_audio(row["path"], max_seconds=max_seconds)

    def _run(self, targets: list[_Target], runner, manifest, max_seconds, batch_size, batch_seconds, frame_dtype) -> float:
        """Extract what any target lacks, batch by batch, with one pass of ``runner`` per batch; each target
        commits one shard per batch holding its own missing rows (its layer, where the pass serves several).
        Return the audio seconds read."""
        needed = [set(t.todo) for t in targets]
        todo = sorted(set().union(*needed))
        if not todo:
            return 0.0
        rows = manifest.iloc[todo]
        lengths = self._lengths(runner, rows, max_seconds)
        max_total = int(batch_seconds * SAMPLE_RATE) if runner.modality == "audio" else 1 << 62
        batches = length_batches(lengths, batch_size, max_total, exact=not runner.pads_exactly)
        audio_seconds = 0.0
        with progress_bar(len(todo), f"extracting {', '.join(t.extractor.spec for t in targets)}", unit="utt") as advance:
            for batch in batches:
                positions = [todo[i] for i in batch]
                inputs, reasons = [], []
                for p in positions:
                    try:
                        inputs.append(self._input(runner, manifest.iloc[p], max_seconds))
                        reasons.append("")
                    except AudioError as error:
                        inputs.append(None)
                        reasons.append(error.reason)
                outputs = self._extract_batch(runner, inputs, reasons)
                if runner.modality == "audio":
                    audio_seconds += sum(len(x) for x in inputs if x is not None) / SAMPLE_RATE
                for target, wanted in zip(targets, needed, strict=True):
                    own = [i for i, p in enumerate(positions) if p in wanted]
                    if not own:
                        continue
                    mine = [outputs[i] if outputs[i] is None or target.column is None else outputs[i][:, target.column]
                            for i in own]  # fmt: skip
                    shapes = [o.shape[1:] for o in mine if o is not None]
                    if shapes and not target.entry.described():
                        self._describe(target.entry, target.extractor, target.identity, shapes[0])
                    target.entry.write_shard(
                        [target.keys[positions[i]] for i in own],
                        [manifest["utt_id"].iloc[positions[i]] for i in own],
                        mine,
                        [reasons[i] for i in own],
                        frame_dtype,
                    )
                advance(len(batch))
        return audio_seconds

    @staticmethod
    def _extract_batch(extractor, inputs, reasons) -> list[np.ndarray | None]:
        """Run the extractor on the loadable inputs; when the batch fails, retry one by one to isolate it."""
        ready = [i for i, x in enumerate(inputs) if x is not None]
        outputs: list[np.ndarray | None] = [None] * len(inputs)
        if not ready:
            return outputs
        try:
            results = extractor.extract([inputs[i] for i in ready])
        except ModelLoadError:
            raise  # the model itself, not this batch: stop with one error rather than fail every utterance
        except (BudgetError, RuntimeError) as error:  # RuntimeError: torch refusing an input
            if len(ready) == 1:
                reasons[ready[0]] = f"{EXTRACTOR_FAILED}: {error}"
                return outputs
            results = []
            for i in ready:
                own_reason = [""]
                results.append(FeatureStore._extract_batch(extractor, [inputs[i]], own_reason)[0])
                reasons[i] = own_reason[0]
        for i, result in zip(ready, results, strict=True):
            outputs[i] = result
        return outputs

    @staticmethod
    def _lengths(extractor, rows: pd.DataFrame, max_seconds) -> list[int]:
        """Input lengths for batching: cropped samples at 16 kHz from headers, or characters."""
        if extractor.modality == "text":
            return [len(str(t)) for t in rows["text"]]
        limit = float("inf") if max_seconds is None else max_seconds
        lengths = []
        for path in rows["path"]:
            try:
                info = sf.info(str(path))
                seconds = min(info.frames / info.samplerate, limit)
            except (sf.LibsndfileError, RuntimeError, OSError):
                seconds = 0.0  # fails again, with its reason, when loaded
            lengths.append(int(round(seconds * SAMPLE_RATE)))
        return lengths

    # -- reading -----------------------------------------------------------------------------

    def load(
        self,
        extractor: FeatureExtractor,
        manifest: pd.DataFrame,
        *,
        layer: int | None = None,
        max_seconds: float | None = MAX_SECONDS,
        frame_dtype: str = "float16",
        utterance_identity: str = "stat",
    ) -> FeatureSet:
        """The stored features of ``manifest``'s utterances, in its order.

        ``layer`` picks one hidden state from an entry that stored them all.
        Raises when nothing was extracted for this configuration.
        """
        _, entry = self._entry(extractor, max_seconds, frame_dtype, utterance_identity)
        if not entry.described():
            failed = entry.index() if entry.shards.is_dir() else pd.DataFrame()
            if len(failed):
                reasons = failed["reason"].value_counts()
                raise BudgetError(
                    f"every utterance failed extraction for {extractor.spec} ({len(failed)}; most often: "
                    f"{reasons.index[0]}); fix the cause and run again: failures are retried"
                )
            raise BudgetError(f"no stored features for {extractor.spec} with these settings; run `budget extract` first")
        meta = entry.meta()
        layer_names = meta["layer_names"]
        if layer is not None and layer_names is None:
            raise BudgetError(f"{extractor.spec} stored one layer; a layer can only be picked from an 'all' entry")
        if layer is not None and not 0 <= layer < len(layer_names):
            raise BudgetError(f"{extractor.spec}: layer {layer} out of range 0..{len(layer_names) - 1}")
        index = entry.index()
        keys = self.utterance_keys(extractor, manifest, utterance_identity)
        found = index.reindex(keys)
        usable = (found["ok"] == True).to_numpy()  # noqa: E712 (pandas element-wise)
        rows = found[usable].astype({"offset": np.int64, "n_frames": np.int64, "row": np.int64})
        opened: dict[str, tuple[np.ndarray, ...]] = {}
        sequences, means, maxes = [], [], []
        for shard, offset, n, row in zip(rows["shard"], rows["offset"], rows["n_frames"], rows["row"], strict=True):
            if shard not in opened:
                opened[shard] = tuple(
                    np.load(entry.shards / f"{shard}.{part}.npy", mmap_mode="r") for part in SHARD_ARRAYS
                )
            shard_frames, shard_mean, shard_max = opened[shard]
            sequences.append(shard_frames[offset : offset + n])
            means.append(shard_mean[row])
            maxes.append(shard_max[row])
        shape = tuple(meta["frame_shape"])
        lengths = np.array([len(x) for x in sequences], dtype=np.int64)
        frames = np.concatenate(sequences) if sequences else np.zeros((0, *shape), np.float16)
        mean = np.stack(means) if means else np.zeros((0, *shape), np.float32)
        maximum = np.stack(maxes) if maxes else np.zeros((0, *shape), np.float32)
        if layer is not None:
            frames, mean, maximum = frames[:, layer], mean[:, layer], maximum[:, layer]
        return FeatureSet(
            spec=extractor.spec,
            utt_ids=manifest["utt_id"].to_numpy()[usable],
            lengths=lengths,
            offsets=np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64),
            frames=np.ascontiguousarray(frames),
            mean=np.asarray(mean, dtype=np.float32),
            max=np.asarray(maximum, dtype=np.float32),
            layer_names=None if layer is not None else layer_names,
            missing=list(manifest["utt_id"].to_numpy()[~usable]),
        )

    def summary(self) -> pd.DataFrame:
        """One row per stored entry: spec, frame shape, utterances, failures, frames, size on disk."""
        rows = []
        for folder in sorted(p for p in self.root.glob("*") if (p / "entry.json").is_file()):
            entry = _Entry(folder)
            meta = entry.meta()
            index = entry.index().drop_duplicates("utt_id", keep="last")  # an utterance's latest version; older ones superseded
            ok = index["ok"] == True  # noqa: E712 (pandas element-wise)
            size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
            audio = meta["identity"].get("audio") or {}
            rows.append(
                {
                    "spec": meta["spec"],
                    "entry": folder.name,
                    "frame_shape": "x".join(str(d) for d in meta["frame_shape"] or ["-"]),
                    "layers": len(meta["layer_names"]) if meta["layer_names"] else 1,
                    "max_seconds": audio.get("max_seconds"),
                    "utterances": int(ok.sum()),
                    "failures": int((~ok).sum()),
                    "frames": int(index.loc[ok, "n_frames"].sum()),
                    "identity": (meta["identity"].get("audio") or {}).get("utterance_identity", "transcript"),
                    "size_mb": size / 2**20,
                }
            )
        return pd.DataFrame(
            rows,
            columns=["spec", "entry", "frame_shape", "layers", "max_seconds", "utterances", "failures", "frames", "identity", "size_mb"],
        )

    def failures(self, entry_name: str) -> pd.DataFrame:
        """The failed utterances of one entry (by folder name), with reasons."""
        index = _Entry(self.root / entry_name).index()
        failed = index[index["ok"] == False]  # noqa: E712 (pandas element-wise)
        return failed[["utt_id", "reason"]].reset_index(drop=True)
