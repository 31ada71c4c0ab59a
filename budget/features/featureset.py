"""The features of a corpus's utterances, in memory: what training reads."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from budget.errors import BudgetError


class MappedFrames:
    """Every utterance's frames left in the store's memory-mapped shard files and read on demand, in a feature set's
    order (``offsets``): what a study holds instead of a copy of every frame when that copy would not fit.

    ``files[shard[i]]`` holds utterance ``i`` from row ``first[i]`` on (of
    ``layer`` alone, where the entry stores every layer).  Pickled, it carries
    the file names, not their contents: a worker that sees the same files
    reads them itself.
    """

    def __init__(self, files: list[Path], shard: np.ndarray, first: np.ndarray, lengths: np.ndarray,
                 layer: int | None = None, flat: bool = False):  # fmt: skip
        self.files, self.layer, self.flat = [Path(file) for file in files], layer, flat
        self.shard = np.asarray(shard, dtype=np.int64)
        self.first = np.asarray(first, dtype=np.int64)
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)[:-1]]).astype(np.int64)
        self._opened: dict[int, np.ndarray] = {}
        probe = np.load(self.files[0], mmap_mode="r") if self.files else np.zeros((0, 0), np.float16)
        self.dtype = probe.dtype
        frame = probe.shape[1 if layer is None else 2 :]
        self.shape = (int(self.lengths.sum()), *((int(np.prod(frame)),) if flat else frame))

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_opened": {}}

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def folder(self) -> Path | None:
        """Where the files are (None: no files)."""
        return self.files[0].parent if self.files else None

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def _file(self, shard: int) -> np.ndarray:
        if shard not in self._opened:  # a plain array over the map: indexing a np.memmap costs several times more
            self._opened[shard] = np.load(self.files[shard], mmap_mode="r").view(np.ndarray)
        return self._opened[shard]

    def take(self, positions: np.ndarray) -> np.ndarray:
        """The frames at ``positions`` (among every utterance's frames end to end), read from the files."""
        positions = np.asarray(positions, dtype=np.int64)
        utterance = np.searchsorted(self.offsets, positions, side="right") - 1
        rows = self.first[utterance] + positions - self.offsets[utterance]
        shards = self.shard[utterance]
        out = np.empty((len(positions), *self._file(0).shape[1 if self.layer is None else 2 :]), dtype=self.dtype)
        order = np.argsort(shards, kind="stable")
        groups = np.split(order, np.flatnonzero(np.diff(shards[order])) + 1) if len(order) else []
        for picked in groups:  # the positions each file holds
            stored = self._file(int(shards[picked[0]]))
            out[picked] = stored[rows[picked]] if self.layer is None else stored[rows[picked], self.layer]
        return out.reshape(len(positions), *self.shape[1:])

    def reshape(self, frames: int, width: int) -> MappedFrames:
        """Each frame's hidden states side by side, ``(frames, layers * width)``, as an array's reshape gives them."""
        if (frames, width) != (self.shape[0], int(np.prod(self.shape[1:]))):
            raise BudgetError(f"cannot reshape frames of shape {self.shape} to {(frames, width)}")
        return MappedFrames(self.files, self.shard, self.first, self.lengths, self.layer, flat=True)

    def select(self, rows: np.ndarray) -> MappedFrames:
        """The frames of utterances ``rows``, in that order, still in the files."""
        return MappedFrames(self.files, self.shard[rows], self.first[rows], self.lengths[rows], self.layer, self.flat)

    def __getitem__(self, frames: slice) -> np.ndarray:
        """Consecutive frames, as an array's slice would give them."""
        return self.take(np.arange(*frames.indices(len(self))))


@dataclass
class FeatureSet:
    """Features of a manifest's utterances, in manifest order, ready for training.

    ``frames[offsets[i] : offsets[i] + lengths[i]]`` is utterance ``i``;
    ``mean`` and ``max`` are its pooled statistics.  ``frames`` is None where
    only the statistics were loaded (every head of the study pools first), and
    :class:`MappedFrames` where they stay in the store until read.  ``stacked`` > 1: each
    frame holds that many hidden states of an encoder side by side (layer-major),
    for a head that learns their weights (a ``:weighted`` feature set).  Utterances with no
    features (failed or never extracted) are left out and named in ``missing``.
    """

    spec: str
    utt_ids: np.ndarray
    lengths: np.ndarray
    offsets: np.ndarray
    frames: np.ndarray | MappedFrames | None
    mean: np.ndarray
    max: np.ndarray
    layer_names: list[str] | None = None
    missing: list[str] = field(default_factory=list)
    stacked: int = 1

    def __len__(self) -> int:
        return len(self.utt_ids)

    @property
    def dim(self) -> int:
        return int(self.mean.shape[-1])

    @property
    def layer_dim(self) -> int:
        """The width of one stacked hidden state (the whole frame when one is stored)."""
        return self.dim // self.stacked

    def sequence(self, i: int) -> np.ndarray:
        """The frames of utterance ``i``."""
        if self.frames is None:
            raise BudgetError(f"{self.spec}: loaded without frames (its statistics only)")
        return self.frames[self.offsets[i] : self.offsets[i] + self.lengths[i]]

    def select(self, utt_ids) -> FeatureSet:
        """The features of ``utt_ids``, in that order (each must be present): this one where that is every
        utterance in order, and frames left in the store stay there (no frame is copied in either case)."""
        position = {u: i for i, u in enumerate(self.utt_ids)}
        rows = np.array([position[u] for u in utt_ids], dtype=np.int64)
        if np.array_equal(rows, np.arange(len(self))):
            return self
        lengths = self.lengths[rows]
        if self.frames is None:
            frames = None
        elif isinstance(self.frames, MappedFrames):
            frames = self.frames.select(rows)
        else:
            pieces = [self.sequence(i) for i in rows]
            frames = np.concatenate(pieces) if pieces else self.frames[:0]
        return FeatureSet(
            spec=self.spec,
            utt_ids=self.utt_ids[rows],
            lengths=lengths,
            offsets=np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64),
            frames=frames,
            mean=self.mean[rows],
            max=self.max[rows],
            layer_names=self.layer_names,
            stacked=self.stacked,
        )
