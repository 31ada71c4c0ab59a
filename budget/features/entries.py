"""The feature store on disk: entries, their identity, shards and locking.

Layout of a store folder::

    <store>/<slug>-<key>/entry.json                  what the entry holds: spec, identity, dims
    <store>/<slug>-<key>/shards/<id>.frames.npy      frames of a shard's utterances, concatenated in time
    <store>/<slug>-<key>/shards/<id>.mean.npy        per-utterance mean over time (float32)
    <store>/<slug>-<key>/shards/<id>.max.npy         per-utterance max over time (float32)
    <store>/<slug>-<key>/shards/<id>.index.parquet   key, utt_id, offset, n_frames, ok, reason

**Keys.**  An entry's key hashes the extractor's full identity (model name,
checksum of its weight files, layer, precision, extractor version) and the
audio settings (sample rate, crop, frame dtype); an utterance's key hashes its
audio file's bytes (or, with ``file_identity="stat"``, its resolved path,
size and modification time: no reading, for corpora too large to hash at
every study), or for text features the transcript itself.  Changing any of
these never serves stale features: a changed setting is a new entry, a changed
file a new key.

**Atomicity.**  Extraction gathers batches into a shard (about 256
utterances, 64 MB of frames or a minute of work: ``budget.features.store``).
Its arrays are written under temporary names and renamed into place, and its
index is renamed last: a shard without an index does not exist for readers,
and is swept away by the next writer.  An interrupted extraction (Ctrl-C)
commits what it holds; a killed one (kill -9) loses at most the shard it was
filling, and running it again continues where it stopped.  One writer
at a time holds the entry's lock file.

**Frames in float16.**  Frames are stored as float16 by default (pooled
statistics stay float32, computed before rounding).  Rounding to nearest gives
``|x16 - x| <= max(|x| * 2**-11, 2**-25)``: a relative error of at most
4.9e-4 for ``|x| >= 2**-14``; values beyond +-65504 do not fit, and the store
refuses them (use ``frame_dtype="float32"``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from budget import files
from budget.audio import MAX_SECONDS, MIN_SECONDS, SAMPLE_RATE
from budget.errors import BudgetError, check_number
from budget.features.base import FeatureExtractor
from budget.progress import note as _note

STORE_ENV = "BUDGET_STORE_DIR"
FRAME_DTYPES = ("float16", "float32")  # the first is the default
FLOAT16_MAX = float(np.finfo(np.float16).max)
_INDEX_COLUMNS = ["key", "utt_id", "offset", "n_frames", "ok", "reason"]
#: How an audio file is known: by path, size and modification time (cheap), or by a hash of its bytes (survives
#: ``cp -p`` and ``touch -r``, which keep size and date while changing content).
FILE_IDENTITIES = ("content", "stat")
#: How long an extraction waits for another one writing the same entry before it gives up.
WRITER_WAIT_SECONDS = 30 * 60
#: The arrays of one shard, each in ``<shard>.<name>.npy``.
SHARD_ARRAYS = ("frames", "mean", "max")
#: How a failure of the extractor itself (not of the audio) begins: such utterances are tried again.
EXTRACTOR_FAILED = "extractor failed"


def default_store_dir() -> Path:
    """``$BUDGET_STORE_DIR``, else ``$XDG_CACHE_HOME/budget/features`` (``~/.cache/budget/features``)."""
    if os.environ.get(STORE_ENV):
        return Path(os.environ[STORE_ENV]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "budget" / "features"


@dataclass(frozen=True)
class EntrySettings:
    """How features are stored, besides the extractor: the crop, the frame dtype and how audio files are known.

    Extraction and loading build an entry's identity from these in one place,
    so what ``budget extract`` writes is what a study with the same settings reads.
    """

    max_seconds: float | None = MAX_SECONDS  # 0 or None: whole files (held as None)
    frame_dtype: str = FRAME_DTYPES[0]
    file_identity: str = "content"

    def __post_init__(self):
        if self.max_seconds is not None:
            check_number("max_seconds", self.max_seconds, minimum=0)
            if self.max_seconds == 0:
                object.__setattr__(self, "max_seconds", None)
        if self.frame_dtype not in FRAME_DTYPES:
            raise BudgetError(f"frame_dtype must be one of {', '.join(FRAME_DTYPES)}; got {self.frame_dtype!r}")
        if self.file_identity not in FILE_IDENTITIES:
            raise BudgetError(f"file_identity must be one of {', '.join(FILE_IDENTITIES)}; got {self.file_identity!r}")

    def identity(self, extractor: FeatureExtractor) -> dict:
        """Everything an entry's features depend on."""
        identity = {"extractor": extractor.identity(), "frame_dtype": self.frame_dtype}
        if extractor.modality == "audio":
            identity["audio"] = {
                "sample_rate": SAMPLE_RATE,
                "max_seconds": self.max_seconds,
                "min_seconds": MIN_SECONDS,
                "utterance_identity": self.file_identity,  # the stored key: entry names derive from it
            }
        return identity

    def entry(self, root: Path, extractor: FeatureExtractor) -> Entry:
        """The extractor's entry in the store at ``root`` under these settings."""
        digest = hashlib.sha256(json.dumps(self.identity(extractor), sort_keys=True, default=str).encode()).hexdigest()[:16]
        return Entry(root / f"{slug(extractor.spec)}-{digest}")

    def utterance_keys(self, extractor: FeatureExtractor, manifest: pd.DataFrame) -> list[str]:
        """One key per manifest row: audio file identity, or the transcript for text features."""
        keys = []
        for path, text in zip(manifest["path"], manifest["text"], strict=True):
            if extractor.modality == "text":
                blob = b"text\0" + str(text).encode()
            elif self.file_identity == "content" and Path(path).is_file():
                with Path(path).open("rb") as handle:  # streamed: the key of b"content\0" and the file's bytes
                    keys.append(hashlib.file_digest(handle, lambda: hashlib.sha1(b"content\0")).hexdigest())
                continue
            elif self.file_identity == "content":
                blob = b"content\0" + str(path).encode()
            else:
                resolved = Path(path).resolve()
                try:
                    stat = resolved.stat()
                    blob = f"stat\0{resolved}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()
                except FileNotFoundError:
                    blob = f"missing\0{resolved}".encode()
            keys.append(hashlib.sha1(blob).hexdigest())
        return keys


class Entry:
    """One extractor configuration's folder in the store."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.shards = folder / "shards"

    @contextmanager
    def lock(self) -> Iterator[None]:
        """The entry's writer lock: a second extraction waits for the first (up to :data:`WRITER_WAIT_SECONDS`)."""
        files.make_folder(self.shards)
        busy = f"another extraction is writing {self.folder}"
        with files.exclusive(self.folder / ".lock", busy, WRITER_WAIT_SECONDS, log=_note):
            yield

    def meta(self) -> dict:
        return files.read_json(self.folder / "entry.json")

    def described(self) -> bool:
        """Whether entry.json knows the frame shape: at least one utterance was extracted."""
        return (self.folder / "entry.json").is_file() and self.meta()["frame_shape"] is not None

    def record_extraction(self, seconds: float, utterances: int, device: str) -> None:
        """Add one extraction's time to entry.json (the writer holds the lock), for cost per utterance."""
        meta = self.meta()
        done = meta.get("extraction") or {"seconds": 0.0, "utterances": 0}
        meta["extraction"] = {"seconds": done["seconds"] + seconds, "utterances": done["utterances"] + utterances,
                              "device": device}  # fmt: skip
        files.write_json(self.folder / "entry.json", meta)

    def seconds_per_utterance(self) -> float | None:
        """Measured extraction seconds per utterance, over every extraction into the entry (None: not recorded)."""
        done = self.meta().get("extraction") if (self.folder / "entry.json").is_file() else None
        return done["seconds"] / done["utterances"] if done and done["utterances"] else None

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


#: The settings features are stored under unless a study or ``budget extract`` says otherwise.
DEFAULT_SETTINGS = EntrySettings()


def to_extract(keys: list[str], known: pd.DataFrame | None) -> list[int]:
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


def slug(spec: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", Path(spec).name if "/" in spec else spec).strip("-")[:40] or "features"
