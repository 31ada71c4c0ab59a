"""A feature set on the device (:class:`DeviceFeatures`) and what a run draws from it: its data order, frame
samples and seeds, fixed up front from the run's own seed."""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from budget.engine.config import TrainConfig, solved
from budget.engine.device import product_dtype
from budget.errors import BudgetError
from budget.features.featureset import FeatureSet, MappedFrames
from budget.grid import Run
from budget.heads import EnsembleHead, PackedBatch

NO_FRAMES = "these features were loaded without frames (FeatureStore.load(..., frames=False)); a head that reads frames needs them"


class DeviceFeatures:
    """A feature set on the device: pooled statistics and packed frames, with per-utterance sums.

    ``frames`` is None where the feature set was loaded without them (every
    head of the study pools first): the pooled statistics are all there is.
    Frames left in the store (:class:`MappedFrames`, on a CPU) are read as
    they are asked for (:meth:`rows`), in float32, less ``centre`` and in
    ``dtype`` where given: exactly what a copy of every frame would hold.
    """

    def __init__(self, frames: torch.Tensor | MappedFrames | ScratchFrames | None, lengths: np.ndarray, mean: torch.Tensor,
                 maximum: torch.Tensor, stacked: int = 1, centre: torch.Tensor | None = None,
                 dtype: torch.dtype | None = None):  # fmt: skip
        self._frames = frames  # (total frames, D): D = stacked hidden states of layer_dim each
        self._centre, self._dtype = centre, dtype
        self.stacked = stacked
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)[:-1]]).astype(np.int64)
        self.device = mean.device
        self.lengths_t = torch.from_numpy(self.lengths).to(self.device)
        self.offsets_t = torch.from_numpy(self.offsets).to(self.device)
        self.mean, self.max = mean, maximum  # (N, D) float32
        self._meanmax: torch.Tensor | None = None
        self._centred: dict[torch.dtype, DeviceFeatures] = {}
        self._segmented: dict[int, DeviceFeatures] = {}
        self._sums: tuple[torch.Tensor, torch.Tensor] | None = None

    @classmethod
    def upload(cls, features: FeatureSet, device: torch.device, half: bool | None = None) -> DeviceFeatures:
        """The feature set on ``device``, frames in :meth:`upload_dtype` (float16 when ``half``); frames left in the
        store stay there for a float32 CPU copy (one layer of an entry of every layer: written once to a scratch file
        of its own, :meth:`ScratchFrames.layer_of`), and are read into the device's memory by blocks otherwise."""
        frames = None
        if features.frames is not None:
            if half is None:
                dtype = cls.upload_dtype(features.frames.dtype, device)
            else:
                dtype = torch.float16 if half else torch.float32
            if not isinstance(features.frames, MappedFrames):
                frames = torch.from_numpy(np.ascontiguousarray(features.frames)).to(device, dtype)
            elif device.type == "cpu" and dtype == torch.float32:
                frames = features.frames if features.frames.layer is None else ScratchFrames.layer_of(features.frames)
            else:
                frames = torch.empty(features.frames.shape, dtype=dtype, device=device)
                rows = max(1, 2**24 // max(features.dim, 1))
                for start in range(0, len(frames), rows):
                    frames[start : start + rows] = torch.from_numpy(features.frames[start : start + rows]).to(device, dtype)
        return cls(
            frames,
            features.lengths,
            torch.from_numpy(np.asarray(features.mean, dtype=np.float32)).to(device),  # on a CPU, the loaded arrays
            torch.from_numpy(np.asarray(features.max, dtype=np.float32)).to(device),
            features.stacked,
        )

    @staticmethod
    def upload_dtype(stored: np.dtype, device: torch.device) -> torch.dtype:
        """float16 on CUDA where the store holds float16 (nothing lost, half the memory); float32 otherwise: a
        float32 store may hold values float16 cannot (beyond 65504), and CPU kernels are slower in float16."""
        return torch.float16 if device.type == "cuda" and np.dtype(stored) == np.float16 else torch.float32

    def __len__(self) -> int:
        return len(self.lengths)

    @property
    def has_frames(self) -> bool:
        return self._frames is not None

    @property
    def mapped(self) -> bool:
        """Whether the frames stay in the store, read as asked for."""
        return isinstance(self._frames, MappedFrames | ScratchFrames)

    @property
    def frames(self) -> torch.Tensor:
        """Every utterance's frames end to end: an error where only the statistics were loaded, or the frames are
        left in the store (read them by :meth:`rows`)."""
        if not isinstance(self._frames, torch.Tensor):
            raise BudgetError(NO_FRAMES if self._frames is None else "these frames stay in the store; read them by rows()")
        return self._frames

    def rows(self, index: torch.Tensor) -> torch.Tensor:
        """The frames at ``index`` (positions among every utterance's frames end to end)."""
        if not self.mapped:
            return self.frames.index_select(0, index)  # gathers rows faster than [...]
        values = torch.from_numpy(self._frames.take(index.cpu().numpy())).to(self.device, torch.float32)
        return values if self._centre is None else values.sub_(self._centre).to(self._dtype)  # no second float32 copy

    def block(self, start: int, stop: int) -> torch.Tensor:
        """Consecutive frames ``start`` to ``stop``."""
        if not self.mapped:
            return self.frames[start:stop]
        return self.rows(torch.arange(start, stop, device=self.device))

    def centred(self, dtype: torch.dtype) -> DeviceFeatures:
        """The frames less their mean over every utterance, in ``dtype``: what stepped frame heads read (made once;
        frames left in the store are centred as they are read).

        Rounded to bf16, a frame keeps 8 significant bits of its value;
        centred, those bits describe how it varies rather than its offset (a
        feature of mean 1000 and spread 1 would otherwise lose its spread).
        The copy's standardisation statistics are its own, so a head
        standardises it exactly as it would the frames themselves.
        """
        if dtype not in self._centred:
            summed_before = self._sums is not None
            centre = (self.utt_sum.sum(0) / max(int(self.lengths.sum()), 1)).float()
            if not summed_before:  # made for the centre alone: the copy's own sums take their place
                self._sums = None
            if self.mapped:
                self._centred[dtype] = DeviceFeatures(self._frames, self.lengths, self.mean, self.max, self.stacked,
                                                      centre, dtype)  # fmt: skip
                return self._centred[dtype]
            frames = torch.empty(self.frames.shape, dtype=dtype, device=self.frames.device)
            rows = max(1, 2**24 // max(self.dim, 1))
            for start in range(0, len(frames), rows):  # by blocks: no float32 copy of every frame at once
                frames[start : start + rows] = self.frames[start : start + rows].float() - centre
            self._centred[dtype] = DeviceFeatures(frames, self.lengths, self.mean, self.max, self.stacked)
        return self._centred[dtype]

    def segmented(self, most: int) -> DeviceFeatures:
        """Each utterance's frames averaged over at most ``most`` consecutive stretches of near-equal length (of ``L``
        frames in ``c`` stretches, the ``j``-th from ``floor(j L / c)`` to ``floor((j + 1) L / c)``), in float32: what
        fitted attention weighs (made once).  An utterance of ``most`` frames or fewer keeps them; 0 keeps every frame.
        Where the frames stay in the store, the segments are written to a scratch file beside them
        (:class:`ScratchFrames`): a study holds only the segments a fit or a block of predictions reads.
        """
        if not most or int(self.lengths.max(initial=0)) <= most:
            return self
        if most not in self._segmented:
            counts = np.minimum(self.lengths, most)
            owner = np.repeat(np.arange(len(counts)), counts)
            rank = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
            length, count = self.lengths[owner], counts[owner]
            sizes = ((rank + 1) * length) // count - (rank * length) // count
            shape = (len(sizes), self.dim)
            if self.mapped:  # beside the frames: a run gathers its own segments, a prediction block its own
                frames = ScratchFrames(shape, self._frames.folder)
                _segment_means(self.block, sizes, torch.from_numpy(frames.values))
            else:
                frames = torch.empty(shape, dtype=torch.float32, device=self.device)
                _segment_means(self.block, sizes, frames)
            self._segmented[most] = DeviceFeatures(frames, counts, self.mean, self.max, self.stacked)
        return self._segmented[most]

    @property
    def utt_sum(self) -> torch.Tensor:
        """Per-utterance sums of the frames ``(N, D)`` in float64 (made on first use: :meth:`summed`)."""
        return self.summed()._sums[0]

    @property
    def utt_sumsq(self) -> torch.Tensor:
        """Per-utterance sums of the frames' squares ``(N, D)`` in float64."""
        return self.summed()._sums[1]

    def summed(self) -> DeviceFeatures:
        """These features with their per-utterance sums made: a pass over every frame, once, and only for frames a
        head standardises (a study of attention alone never sums the frames its segments average)."""
        if self._sums is None:
            if self._frames is None:
                raise BudgetError(NO_FRAMES)
            self._sums = _frame_sums(self.block, self.lengths, self.dim)
        return self

    @property
    def dim(self) -> int:
        return int(self.mean.shape[1])

    @property
    def layer_dim(self) -> int:
        """The width of one stacked hidden state, what a head is built for (:class:`budget.heads.EnsembleHead`)."""
        return self.dim // self.stacked

    def pooled(self, kind: str) -> torch.Tensor:
        """Stored statistics: ``mean``, or ``meanmax`` (mean and max side by side)."""
        if kind == "meanmax":
            if self._meanmax is None:
                self._meanmax = torch.cat([self.mean, self.max], dim=1)
            return self._meanmax
        return self.mean

    def gathered(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The utterances ``rows`` as attention's ``shared_logits`` reads them: their frames end to end in float32
        ``(F, D)``, and ``(n, T)`` positions of each utterance's frames among them with a mask of real frames."""
        index = torch.from_numpy(np.asarray(rows, dtype=np.int64)).to(self.device)
        lengths = self.lengths_t[index]
        starts = lengths.cumsum(0) - lengths
        position = torch.arange(max(int(lengths.max()) if len(index) else 1, 1), device=self.device)
        present = position < lengths.unsqueeze(1)
        source = (self.offsets_t[index].unsqueeze(1) + position)[present]  # every frame of the rows, in order
        return self.rows(source).float(), torch.where(present, starts.unsqueeze(1) + position, 0), present

    def frame_means(self, rows: torch.Tensor) -> torch.Tensor:
        """The utterances ``rows``' mean frames ``(len(rows), D)`` in float32, from the frames as held here."""
        return (self.utt_sum[rows] / self.lengths_t[rows].clamp_min(1).unsqueeze(1)).float()

    def standardisation(self, runs: list[Run], kind: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-run ``(E, width)`` mean and std of its training inputs: pooled statistics ``kind``, or frames ("").

        Each run reads its own training rows only, so the work follows the
        subsets, not the corpus (a dense run-by-utterance selection read every
        utterance for every run)."""
        means, variances = [], []
        for run in runs:
            rows = torch.from_numpy(np.asarray(run.train, dtype=np.int64)).to(self.device)
            if kind:
                x = self.pooled(kind)[rows].double()
                count = torch.tensor(float(len(rows)), dtype=torch.float64, device=self.device)
                total, squares = x.sum(0), x.square().sum(0)
            else:
                count = self.lengths_t[rows].sum().double().clamp_min(1)
                total, squares = self.utt_sum[rows].sum(0), self.utt_sumsq[rows].sum(0)
            mean = total / count
            means.append(mean)
            variances.append((squares / count - mean.square()).clamp_min(0))
        return torch.stack(means).float(), torch.stack(variances).sqrt().float()

    def batch(self, slots: torch.Tensor, width: int, kind: str, sample: FrameSample | None = None) -> PackedBatch:
        """Gather each member's slot utterances (``(E, B)``, -1 empty) into one batch on the device.

        Heads that pool first read the stored statistics ``kind``; frame heads
        (``kind`` "") get the slots' frames packed end to end, ``width`` frames
        per member: every frame, or the evenly spaced frames of ``sample``.
        """
        slots = slots.to(self.device)  # a no-op in training, which keeps them there
        valid = slots >= 0
        safe = slots.clamp_min(0)
        if kind:
            return PackedBatch(n_slots=slots.shape[1], pooled=self.pooled(kind)[safe])
        full = torch.where(valid, self.lengths_t[safe], 0)  # (E, B)
        lengths = full if sample is None else sample.counts
        ends = lengths.cumsum(1)
        position = torch.arange(width, device=slots.device)
        slot = torch.searchsorted(ends, position.expand(len(slots), width).contiguous(), right=True)  # (E, W)
        in_batch = slot < slots.shape[1]
        slot = slot.clamp_max(slots.shape[1] - 1)
        taken = lengths.gather(1, slot)
        rank = position - (ends.gather(1, slot) - taken)  # the frame's place among its slot's frames in the batch
        if sample is not None:  # the rank-th of `taken` evenly spaced frames, from the slot's random start
            rank = (sample.starts.gather(1, slot) + rank * full.gather(1, slot)) // taken.clamp_min(1)
        frame = self.offsets_t[safe.gather(1, slot)] + rank
        frames = self.rows(torch.where(in_batch, frame, 0).view(-1)).view(*frame.shape, -1)
        members = (slot.unsqueeze(1) == torch.arange(slots.shape[1], device=slots.device).view(1, -1, 1)) & in_batch.unsqueeze(1)
        return PackedBatch(n_slots=slots.shape[1], frames=frames, members=members, counts=lengths)


#: Disk left free beside a scratch copy of one layer: where there is less, the layer is read from the store's rows.
SCRATCH_MARGIN = 2**30


class ScratchFrames:
    """Rows written once to an unlinked scratch file and read by position, as frames left in the store are: fitted
    attention's segment means where the frames they average stay in the store, and one layer of an entry that
    stores every layer.  The file has no name, so it is gone when the study ends or dies; its pages are the page
    cache's, which the kernel drops under pressure."""

    def __init__(self, shape: tuple[int, int], folder: Path | None, dtype: np.dtype = np.float32):
        try:
            self._file = tempfile.TemporaryFile(dir=folder)  # beside the store, which has room for more than this
        except OSError:  # a store on storage this process may not write: the system's temporary folder
            self._file = tempfile.TemporaryFile()
        self.values = np.memmap(self._file, dtype=dtype, mode="w+", shape=shape)
        self.shape, self.folder = shape, folder

    @classmethod
    def layer_of(cls, frames: MappedFrames, block_values: int = 2**24) -> ScratchFrames | MappedFrames:
        """The one layer ``frames`` reads of an entry that stores every hidden state of a frame side by side, copied
        once, in the store's precision and the feature set's order: a step or a prediction then reads that layer's
        bytes alone, where the stored rows would bring every layer's pages around them from the disk.  ``frames``
        themselves where the disk the copy would go to lacks room for it and :data:`SCRATCH_MARGIN` beside it (a
        memory map written past a full disk ends the process)."""
        out = cls((len(frames), int(np.prod(frames.shape[1:]))), frames.folder, frames.dtype)
        disk = os.fstatvfs(out._file.fileno())
        if disk.f_bavail * disk.f_frsize < out.values.nbytes + SCRATCH_MARGIN:
            out._file.close()
            return frames
        rows = max(1, block_values // max(out.shape[1], 1))
        for start in range(0, len(frames), rows):
            out.values[start : start + rows] = frames[start : start + rows]
        return out

    def __len__(self) -> int:
        return self.shape[0]

    def take(self, positions: np.ndarray) -> np.ndarray:
        return self.values[np.asarray(positions, dtype=np.int64)]


def _segment_means(block: Callable[[int, int], torch.Tensor], sizes: np.ndarray, out: torch.Tensor,
                   block_values: int = 2**20) -> None:  # fmt: skip
    """Fill ``out`` ``(segments, D)`` with the means of consecutive stretches of frames (``sizes``, tiling them in
    order, read by ``block(start, stop)``), by blocks of at most ``block_values`` frame values.  Each is its frames'
    sum in float64, added in order within the stretch alone, over its size: the same value whichever block it was
    read in, so segments written to a scratch file equal those of a copy."""
    ends = np.cumsum(sizes)
    for first, last in utterance_blocks(sizes, block_values // max(out.shape[1], 1)):
        values = block(int(ends[first] - sizes[first]), int(ends[last - 1])).double()
        lengths = torch.from_numpy(sizes[first:last]).to(values.device)
        sums = torch.segment_reduce(values, "sum", lengths=lengths)
        out[first:last] = (sums / lengths.clamp_min(1).unsqueeze(1)).to(out.device, torch.float32)


def _frame_sums(block: Callable[[int, int], torch.Tensor], lengths: np.ndarray, width: int,
                block_elements: int = 2**20) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Per-utterance sums of frames and of their squares, in float64, by blocks of whole utterances, read by
    ``block(start, stop)`` (frames ``width`` wide).

    Cumulative sums rather than scatter-adds, so the result is the same on
    every run and device.  A block's float64 working copies (six of them) are
    what the sums add to a study's peak memory: 48 MB at the default, where
    2**25 elements took 1.3 GB and ran twice as slow (out of cache).
    """
    ends = np.cumsum(lengths)
    first_block = block(0, 0)
    # the sums are allocated whole up front: kept per block, they would pin the heap between the blocks'
    # working copies, and the process would hold about a block's worth more for every block read
    sums = first_block.new_empty((len(lengths), width), dtype=torch.float64)
    squares = first_block.new_empty((len(lengths), width), dtype=torch.float64)
    for first, last in utterance_blocks(lengths, block_elements // max(width, 1)):
        start = int(ends[first] - lengths[first])
        values = block(start, int(ends[last - 1])).double()
        zero = values.new_zeros(1, values.shape[1])
        counts = torch.from_numpy(lengths[first:last]).to(values.device)
        bounds = torch.from_numpy(ends[first:last] - start).to(values.device)
        for out, summed in ((sums, values), (squares, values.square())):
            cumulative = torch.cat([zero, summed.cumsum(0)])
            out[first:last] = cumulative[bounds] - cumulative[bounds - counts]
    return sums, squares


def utterance_blocks(lengths: np.ndarray, frames_per_block: int) -> Iterator[tuple[int, int]]:
    """Consecutive utterances ``[first, last)`` whose frames (``lengths``) add up to at most ``frames_per_block``,
    one utterance at least: how a pass over every frame keeps its working copies bounded."""
    ends = np.cumsum(lengths)
    first = 0
    while first < len(lengths):
        start = int(ends[first] - lengths[first])
        last = max(first + 1, int(np.searchsorted(ends, start + max(frames_per_block, 1), side="right")))
        yield first, last
        first = last


def slot_frames(lengths: np.ndarray) -> float:
    """The frames a batch plans for each utterance slot: twice the mean length (slack for long batches), at most the
    longest; 1 for no utterances."""
    if not len(lengths):
        return 1.0
    return min(float(np.max(lengths)), 2 * float(np.mean(lengths)))


def pad_rows(rows: list[np.ndarray], fill: int) -> torch.Tensor:
    """Ragged index lists to one ``(E, longest)`` int64 tensor padded with ``fill``."""
    longest = max((len(r) for r in rows), default=0)
    out = np.full((len(rows), max(longest, 1)), fill, dtype=np.int64)
    for e, r in enumerate(rows):
        out[e, : len(r)] = r
    return torch.from_numpy(out)


def data_order(run: Run, steps: int, batch_size: int) -> np.ndarray:
    """A run's utterance positions for every step ``(steps, batch_size)``: its subset reshuffled each pass.

    A subset smaller than the batch leaves the extra slots empty (-1).  Drawn
    from the run's own seed, so it never depends on other runs.
    """
    rng = np.random.default_rng(run.seed_sequence().spawn(1)[0])
    per_step = min(batch_size, len(run.train))
    passes = math.ceil(steps * per_step / len(run.train))
    stream = run.train[np.argsort(rng.random((passes, len(run.train))), axis=1)].reshape(-1)
    order = np.full((steps, batch_size), -1, dtype=np.int64)
    order[:, :per_step] = stream[: steps * per_step].reshape(steps, per_step)
    return order


@dataclass
class FrameSample:
    """Which frames a step reads of each slot's utterance: ``counts`` ``(E, B)`` evenly spaced frames of the
    utterance's ``L``, the ``i``-th at ``(starts + i * L) // counts``, for a ``starts`` ``(E, B)`` in ``[0, L)``."""

    counts: torch.Tensor
    starts: torch.Tensor


def frame_starts(run: Run, steps: int, batch_size: int) -> np.ndarray:
    """Uniform draws ``(steps, batch_size)`` in [0, 1) that place each step's frame sample within its utterances.

    From the run's own seed (a stream of its own, so the data order is the
    one it would be without frame sampling), never from its mates'.
    """
    return np.random.default_rng(run.seed_sequence().spawn(2)[1]).random((steps, batch_size))


def frame_samples(lengths: np.ndarray, orders: np.ndarray, draws: np.ndarray, per_utterance: int) -> tuple[np.ndarray, np.ndarray]:
    """Frames per slot and their starts ``(steps, E, B)`` for slot utterances ``orders`` (-1 empty) of ``lengths``:
    at most ``per_utterance`` evenly spaced frames of each (every frame of a shorter one)."""
    full = np.append(lengths, 0)[orders]
    counts = np.minimum(full, per_utterance)
    return counts, np.floor(draws * full).astype(np.int64)


def member_seeds(run: Run) -> tuple[int, int]:
    """A run's initialisation seed and 32-bit dropout key, from its own seed."""
    init, dropout = run.seed_sequence().generate_state(2)
    return int(init), int(dropout)


def packed_widths(inputs: DeviceFeatures, orders: np.ndarray) -> np.ndarray:
    """Per step (the first axis of ``orders``), the batch's packed width: known up front, so steps never wait on
    the device."""
    lengths = np.append(inputs.lengths, 0)  # slot -1 -> no frames
    return bucketed(lengths[orders].sum(axis=-1).max(axis=-1))


def bucketed(frames: np.ndarray) -> np.ndarray:
    """Frame counts rounded up, by at most 1/32, to a multiple of a power of two.

    A study's products then take a few dozen shapes rather than one per
    step: CPU matrix libraries build a kernel for each new shape, which a new
    width every step would pay on every step (benchmarks/RESULTS.md).
    """
    frames = np.maximum(np.asarray(frames, dtype=np.int64), 1)
    grain = 2 ** np.maximum(np.floor(np.log2(frames)).astype(np.int64) - 5, 0)
    return -(-frames // grain) * grain


def prepared_inputs(head: type[EnsembleHead], inputs: DeviceFeatures, config: TrainConfig) -> DeviceFeatures:
    """What a head reads, made once per feature set (before free memory sizes the chunks, and outside any timing):
    the stored statistics; for fitted attention the frames, averaged over its segments; for stepped frame heads the
    frames centred in the product dtype."""
    if head.pools_first:
        inputs.pooled(head.pooled_kind)  # meanmax_pool's statistics side by side, made here once
        return inputs
    if not inputs.has_frames:
        raise BudgetError(f"{head.name}: {NO_FRAMES}")
    if solved(head, config):
        return inputs.segmented(config.attention_segments).summed()
    return inputs.centred(product_dtype(inputs.device, config)).summed()
