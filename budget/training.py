"""Training: every run of one head on one feature set, advanced together on the device.

A *run* is one (fold, seed, size): a training subset and the held-out fold to
test on.  :func:`train_runs` trains a list of runs of one head as one ensemble
(chunked only by memory) and returns each run's test predictions.

**The budget does not follow the labels.**  Under the default ``steps``
schedule a run takes ``steps`` optimiser steps of the same batch size,
whatever its subset, with the learning rate decayed to zero on a cosine
(``max_epochs`` lets a small subset stop after that many passes over it, but
never before a quarter of ``steps``); the convergence check doubles every
run's budget to show the curve would not move.  The paper's protocol
(``epochs``: a fixed number of passes at a constant rate, so small subsets get
few steps) stays available for reproduction.

**A step reads a sample of each utterance's frames.**  ``mlp_pool`` is an MLP
applied to every frame, then a mean over frames: any subset of an utterance's
frames estimates the same mean, so a training step reads ``train_frames``
evenly spaced frames of each utterance (from a random start, drawn from the
run's own seed) rather than all of them, and costs that much less.
Prediction reads every frame.  ``train_frames = 0`` reads every frame in
training too.

**Full-batch heads are fitted, not stepped.**  ``mean_pool`` and
``meanmax_pool`` are multinomial logistic regressions on pooled statistics,
convex in their weights; ``attn_pool`` adds a linear frame score before the
pooling.  Under the ``steps`` schedule every run of these heads is fitted to
an optimum of its L2-penalised objective by full-batch L-BFGS, stopped by
scikit-learn's rule (no gradient element above ``lbfgs_tolerance``): the
pooled heads all runs of a chunk as one separable objective from a zero
start, attention each run alone on its own utterances, from its optimum under
uniform attention (mean pooling).  The classifier's penalty is the ``logreg``
reference's (scikit-learn's ``C``, ``TrainConfig.l2_c``); attention's score
weights get a stronger one (:data:`budget.heads.ATTN_SCORE_PRIOR`); dropout
is not used.  No learning rate or step count can then bend a curve: doubling
``steps`` (the L-BFGS iteration cap) leaves a fit that converged unchanged,
and ``mean_pool`` is the engine's own reproduction of ``logreg``.

**Device-resident.**  A feature set is uploaded once (frames in half precision
on CUDA, float32 on CPU).  Each run's data order is drawn once, up front, from
its own generator; every step gathers all members' batches on the device from
those index tensors, and dropout masks come from a counter-based hash
(:mod:`budget.heads`), so no step loops over members in Python and a run's
result does not depend on which runs shared its ensemble.  Frame heads'
matrix products run in bf16 autocast on CUDA cards that support it and on
CPUs with bf16 products in hardware (:func:`uses_autocast`).
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn

from budget.errors import BudgetError, check_number
from budget.features.featureset import FeatureSet
from budget.heads import DEFAULT_DROPOUT, HEADS, DropoutKeys, EnsembleHead, PackedBatch
from budget.sampling import size_value

#: utterance slots per member in one evaluation batch
EVAL_SLOTS = 64
SCHEDULES = ("steps", "epochs")
#: A CPU ensemble chunk's working set, and the fewest runs it holds.  Frame heads are compute-bound on a CPU,
#: so batching buys only each step's fixed cost (Adam, mask keys, kernel launches), and a working set far
#: beyond the caches slows every product: a few tens of MB of activations, but never so few runs that the
#: fixed cost falls on one or two (the scan is in benchmarks/RESULTS.md).
CPU_CHUNK_MB = 32
CPU_MIN_MEMBERS = 4
#: Defaults of the ``steps`` schedule (chosen by the convergence check on EmoDB: README, Studies).
DEFAULT_STEPS = 3000
DEFAULT_LR = 1e-3
DEFAULT_TRAIN_FRAMES = 8
DEFAULT_MAX_EPOCHS = 150
DEFAULT_ATTENTION_WINDOW = 1
ATTENTION_STARTS = ("pooled", "zero")
#: The paper's protocol, for the ``epochs`` schedule.
PAPER_EPOCHS = 60
PAPER_LR = 1e-4
#: Runs the cost model fits to time attention's L-BFGS, and steps it times of a stepped head.
SOLVE_PROBE_RUNS = 4
PROBE_STEPS = 20
#: The full-batch heads' L-BFGS stops when no gradient element (of a member's mean loss) exceeds this:
#: scikit-learn's lbfgs rule for the same objective (its ``tol``), so ``mean_pool`` stops where ``logreg`` does.
DEFAULT_LBFGS_TOLERANCE = 1e-4
LBFGS_HISTORY = 20


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings shared by every run of a study.

    ``schedule="steps"``: ``steps`` optimiser steps for every run, learning
    rate ``lr`` decayed to zero on a cosine; with ``max_epochs``, a run on a
    small subset stops sooner, after that many passes over it, but never
    before a quarter of ``steps``.  ``schedule="epochs"``: the paper's
    ``epochs`` passes over each run's subset at the constant ``lr``.
    """

    schedule: str = "steps"
    steps: int = DEFAULT_STEPS
    epochs: int = PAPER_EPOCHS
    max_epochs: int = DEFAULT_MAX_EPOCHS  # under "steps": a run's passes over its subset, at most; 0: always `steps`
    lr: float = DEFAULT_LR
    batch_size: int = 16
    train_frames: int = DEFAULT_TRAIN_FRAMES  # frames of an utterance an mlp_pool step reads; 0: every frame
    attention_window: int = DEFAULT_ATTENTION_WINDOW  # fitted attention weighs means of this many frames; 1: each frame
    attention_start: str = "pooled"  # fitted attention starts at its mean-pooling optimum ("pooled") or at zero
    lbfgs_tolerance: float = DEFAULT_LBFGS_TOLERANCE  # the full-batch fits stop below this largest gradient element
    dropout: float = DEFAULT_DROPOUT
    weight_decay: float = 0.0
    l2_c: float = 1.0  # inverse L2 strength (scikit-learn's C) of logreg and, under "steps", of the full-batch heads
    device: str = "auto"  # resolved by the study: CUDA when present
    memory_mb: int | None = None  # activation budget per ensemble chunk; None: CPU_CHUNK_MB on CPU, from free memory on CUDA
    bf16: bool | None = None  # bf16 autocast for frame heads' products; None: where the device runs it fast (resolved)

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise BudgetError(f"schedule must be one of {', '.join(SCHEDULES)}; got {self.schedule!r}")
        for key in ("steps", "epochs", "batch_size"):
            check_number(key, getattr(self, key), integer=True, minimum=1)
        check_number("train_frames", self.train_frames, integer=True, minimum=0)
        check_number("max_epochs", self.max_epochs, integer=True, minimum=0)
        check_number("attention_window", self.attention_window, integer=True, minimum=1)
        if self.attention_start not in ATTENTION_STARTS:
            raise BudgetError(f"attention_start must be one of {', '.join(ATTENTION_STARTS)}; got {self.attention_start!r}")
        for key in ("lr", "dropout", "weight_decay", "l2_c", "lbfgs_tolerance"):
            check_number(key, getattr(self, key), minimum=0)
        if self.memory_mb is not None:
            check_number("memory_mb", self.memory_mb, integer=True, minimum=0)
        if not isinstance(self.device, str) or not isinstance(self.bf16, bool | None):
            raise BudgetError(f"device must be a string and bf16 true or false; got {self.device!r}, {self.bf16!r}")
        if not self.lr > 0 or not self.dropout < 1 or not self.l2_c > 0:
            raise BudgetError(f"lr and l2_c must be positive and dropout below 1; got {self.lr}, {self.l2_c}, {self.dropout}")

    def steps_for(self, n_train: int) -> int:
        """Optimiser steps of a run with ``n_train`` examples."""
        if self.schedule == "steps":
            if not self.max_epochs:
                return self.steps
            passes = math.ceil(self.max_epochs * n_train / self.batch_size)
            return min(self.steps, max(self.steps // 4, passes))
        return max(1, math.ceil(self.epochs * n_train / self.batch_size))

    def doubled(self) -> TrainConfig:
        """Twice the budget: the convergence check's setting (every run's steps doubled)."""
        return replace(self, steps=2 * self.steps, epochs=2 * self.epochs, max_epochs=2 * self.max_epochs)

    def describe(self) -> str:
        if self.schedule == "steps" and self.max_epochs:
            budget = (f"{self.steps} steps a run, or {self.max_epochs} passes over a smaller subset (at least "
                      f"{self.steps // 4} steps), learning rate {self.lr:g} decayed to 0 on a cosine")  # fmt: skip
        elif self.schedule == "steps":
            budget = f"{self.steps} steps for every run, learning rate {self.lr:g} decayed to 0 on a cosine"
        else:
            budget = f"{self.epochs} epochs (steps grow with the subset), constant learning rate {self.lr:g}"
        decay = f", weight decay {self.weight_decay:g}" if self.weight_decay else ""
        frames = f" reading {self.train_frames} evenly spaced frames of each utterance a step" if self.train_frames else ""
        stepped = f"Adam, {budget}, batches of {self.batch_size}{frames}, dropout {self.dropout:g}{decay}"
        if self.schedule != "steps":
            return stepped
        stepped_heads = ", ".join(name for name, head in HEADS.items() if not head.full_batch)
        solved = ", ".join(name for name, head in HEADS.items() if head.full_batch)
        return f"{stepped_heads}: {stepped}; {solved}: L2 (C = {self.l2_c:g}) fitted to an optimum by full-batch L-BFGS"


@dataclass(frozen=True)
class Run:
    """One training run: positions into the feature set's rows."""

    fold: int
    seed: int
    size: int | str
    train: np.ndarray
    test: np.ndarray

    def seed_sequence(self) -> np.random.SeedSequence:
        size = size_value(self.size)  # full seeds as 0, k per class as k + 1
        return np.random.SeedSequence([self.seed, self.fold, 0 if math.isinf(size) else int(size) + 1])


def make_optimiser(parameters, config: TrainConfig, steps: int):
    """AdamW and its learning-rate schedule: a cosine to zero over ``steps``, or constant (the paper's).

    Adam's fused kernel on CPU and CUDA: one pass over each parameter a step
    rather than one per arithmetic operation.
    """
    parameters = list(parameters)
    fused = all(parameter.device.type in ("cpu", "cuda") for parameter in parameters)
    optimiser = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay, fused=fused)
    if config.schedule == "steps":
        return optimiser, torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=steps)
    return optimiser, torch.optim.lr_scheduler.LambdaLR(optimiser, lambda _: 1.0)


def training_device(config: TrainConfig) -> torch.device:
    """The device a config trains on (``auto``: CUDA when present)."""
    from budget.features.base import resolve_device

    return torch.device(resolve_device(config.device))


def fast_bf16(device: torch.device) -> bool:
    """Whether ``device`` runs bf16 products fast: a CUDA card that supports them, a CPU that has them in hardware."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_has_fast_bf16()


def with_products(config: TrainConfig) -> TrainConfig:
    """``config`` with its product precision decided: ``bf16`` left unset becomes whether its device runs bf16 fast.

    The decision is the device's, never a timing's, and a study records it
    with its settings, so a study resumed elsewhere keeps the products it
    started with.
    """
    if config.bf16 is not None:
        return config
    return replace(config, bf16=fast_bf16(training_device(config)))


def uses_autocast(device: torch.device, config: TrainConfig) -> bool:
    """bf16 autocast for matrix products: as the config says, or (unset) where :func:`fast_bf16`."""
    if device.type not in ("cpu", "cuda"):
        return False
    if config.bf16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise BudgetError(f"{device} has no bf16 products; set bf16 = false for this study")
    return fast_bf16(device) if config.bf16 is None else config.bf16


def frame_products(config: TrainConfig) -> str:
    """What the stepped frame heads multiply in on the config's device, for a study's provenance."""
    return "bf16 autocast" if uses_autocast(training_device(config), config) else "float32"


def product_dtype(device: torch.device, config: TrainConfig) -> torch.dtype:
    """The dtype stepped frame heads read their frames in: bf16 where they multiply in it, else float32."""
    return torch.bfloat16 if uses_autocast(device, config) else torch.float32


def autocast_for(device: torch.device, config: TrainConfig):
    """The context frame heads compute in: bf16 autocast where :func:`uses_autocast`, else none."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if uses_autocast(device, config) else nullcontext()


@functools.cache
def cpu_has_fast_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AVX-512 BF16 or AMX), as torch's CPU detection reports it.

    Such CPUs run bf16 products several times faster than float32; others
    emulate them and run them many times slower.  Read from the instruction
    set, never timed: a timing probe on a busy machine chose float32 for one
    process in three here, and the choice changes both a study's numbers and
    its cost.
    """
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if all(probe is None for probe in probes):  # an older torch: the kernel's own flags
        flags = _cpu_flags()
        return "avx512_bf16" in flags or "amx_bf16" in flags
    return any(probe is not None and probe() for probe in probes)


def _cpu_flags() -> set[str]:
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        return set()
    return {flag for line in text.splitlines() if line.startswith("flags") for flag in line.split(":", 1)[1].split()}


def solved(head: str, config: TrainConfig) -> bool:
    """Whether an ensemble head's runs are fitted to an optimum by full-batch L-BFGS rather than stepped."""
    return config.schedule == "steps" and HEADS[head].full_batch


class DeviceFeatures:
    """A feature set on the device: pooled statistics and packed frames, with per-utterance sums."""

    def __init__(self, frames: torch.Tensor, lengths: np.ndarray, mean: torch.Tensor, maximum: torch.Tensor):
        self.frames = frames  # (total frames, D)
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)[:-1]]).astype(np.int64)
        device = frames.device
        self.lengths_t = torch.from_numpy(self.lengths).to(device)
        self.offsets_t = torch.from_numpy(self.offsets).to(device)
        self.mean, self.max = mean, maximum  # (N, D) float32
        self._meanmax: torch.Tensor | None = None
        self._centred: dict[torch.dtype, DeviceFeatures] = {}
        self._windowed: dict[int, DeviceFeatures] = {}
        self.utt_sum, self.utt_sumsq = _frame_sums(frames, self.lengths)

    @classmethod
    def upload(cls, features: FeatureSet, device: torch.device, half: bool | None = None) -> DeviceFeatures:
        """The feature set on ``device``, frames in :meth:`upload_dtype` (float16 when ``half``)."""
        if half is None:
            dtype = cls.upload_dtype(features.frames.dtype, device)
        else:
            dtype = torch.float16 if half else torch.float32
        frames = torch.from_numpy(np.ascontiguousarray(features.frames)).to(device, dtype)
        return cls(
            frames,
            features.lengths,
            torch.from_numpy(features.mean.astype(np.float32)).to(device),
            torch.from_numpy(features.max.astype(np.float32)).to(device),
        )

    @staticmethod
    def upload_dtype(stored: np.dtype, device: torch.device) -> torch.dtype:
        """float16 on CUDA where the store holds float16 (nothing lost, half the memory); float32 otherwise: a
        float32 store may hold values float16 cannot (beyond 65504), and CPU kernels are slower in float16."""
        return torch.float16 if device.type == "cuda" and np.dtype(stored) == np.float16 else torch.float32

    def __len__(self) -> int:
        return len(self.lengths)

    def centred(self, dtype: torch.dtype) -> DeviceFeatures:
        """The frames less their mean over every utterance, in ``dtype``: what stepped frame heads read (made once).

        Rounded to bf16, a frame keeps 8 significant bits of its value;
        centred, those bits describe how it varies rather than its offset (a
        feature of mean 1000 and spread 1 would otherwise lose its spread).
        The copy's standardisation statistics are its own, so a head
        standardises it exactly as it would the frames themselves.
        """
        if dtype not in self._centred:
            centre = (self.utt_sum.sum(0) / max(int(self.lengths.sum()), 1)).float()
            frames = torch.empty(self.frames.shape, dtype=dtype, device=self.frames.device)
            rows = max(1, 2**24 // max(self.dim, 1))
            for start in range(0, len(frames), rows):  # by blocks: no float32 copy of every frame at once
                frames[start : start + rows] = self.frames[start : start + rows].float() - centre
            self._centred[dtype] = DeviceFeatures(frames, self.lengths, self.mean, self.max)
        return self._centred[dtype]

    def windowed(self, width: int) -> DeviceFeatures:
        """Each utterance's frames averaged over consecutive windows of ``width`` (the last may be shorter), in
        float32: what fitted attention weighs when its window is wider than a frame (made once)."""
        if width == 1:
            return self
        if width not in self._windowed:
            sizes = [np.minimum(width, length - np.arange(0, length, width)) for length in self.lengths]
            lengths = np.concatenate(sizes) if sizes else np.zeros(0, dtype=np.int64)
            sums, _ = _frame_sums(self.frames, lengths)
            frames = (sums / torch.from_numpy(lengths).to(sums.device).clamp_min(1).unsqueeze(1)).float()
            windows = np.array([len(size) for size in sizes], dtype=np.int64)
            self._windowed[width] = DeviceFeatures(frames, windows, self.mean, self.max)
        return self._windowed[width]

    @property
    def dim(self) -> int:
        return int(self.frames.shape[1])

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
        index = torch.from_numpy(np.asarray(rows, dtype=np.int64)).to(self.frames.device)
        lengths = self.lengths_t[index]
        starts = lengths.cumsum(0) - lengths
        position = torch.arange(max(int(lengths.max()) if len(index) else 1, 1), device=self.frames.device)
        present = position < lengths.unsqueeze(1)
        source = (self.offsets_t[index].unsqueeze(1) + position)[present]  # every frame of the rows, in order
        return self.frames[source].float(), torch.where(present, starts.unsqueeze(1) + position, 0), present

    def frame_means(self) -> torch.Tensor:
        """Each utterance's mean frame ``(N, D)`` in float32, from the frames as held here."""
        return (self.utt_sum / self.lengths_t.clamp_min(1).unsqueeze(1)).float()

    def standardisation(self, runs: list[Run], kind: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-run ``(E, width)`` mean and std of its training inputs: pooled statistics ``kind``, or frames ("")."""
        device = self.frames.device
        selection = torch.zeros(len(runs), len(self) + 1, dtype=torch.float64, device=device)
        index = _pad([run.train for run in runs], len(self)).to(device)
        selection.scatter_(1, index, 1.0)
        selection = selection[:, :-1]
        if kind:
            x = self.pooled(kind).double()
            count = selection.sum(1, keepdim=True)
            mean = selection @ x / count
            var = (selection @ x.square() / count - mean.square()).clamp_min(0)
        else:
            count = (selection @ self.lengths_t.double().unsqueeze(1)).clamp_min(1)
            mean = selection @ self.utt_sum / count
            var = (selection @ self.utt_sumsq / count - mean.square()).clamp_min(0)
        return mean.float(), var.sqrt().float()

    def batch(self, slots: torch.Tensor, width: int, kind: str, sample: FrameSample | None = None) -> PackedBatch:
        """Gather each member's slot utterances (``(E, B)``, -1 empty) into one batch on the device.

        Heads that pool first read the stored statistics ``kind``; frame heads
        (``kind`` "") get the slots' frames packed end to end, ``width`` frames
        per member: every frame, or the evenly spaced frames of ``sample``.
        """
        slots = slots.to(self.frames.device)  # a no-op in training, which keeps them there
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
        frames = self.frames.index_select(0, torch.where(in_batch, frame, 0).view(-1)).view(*frame.shape, -1)  # gathers rows faster than [...]
        members = (slot.unsqueeze(1) == torch.arange(slots.shape[1], device=slots.device).view(1, -1, 1)) & in_batch.unsqueeze(1)
        return PackedBatch(n_slots=slots.shape[1], frames=frames, members=members, counts=lengths)


def _frame_sums(frames: torch.Tensor, lengths: np.ndarray, block_elements: int = 2**25) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-utterance sums of frames and of their squares, in float64, by blocks of whole utterances.

    Cumulative sums rather than scatter-adds, so the result is the same on
    every run and device.
    """
    ends = np.cumsum(lengths)
    per_block = max(1, block_elements // max(frames.shape[1], 1))
    sums, squares = [], []
    first = 0
    while first < len(lengths):
        start = int(ends[first] - lengths[first])
        last = max(first + 1, int(np.searchsorted(ends, start + per_block, side="right")))
        block = frames[start : int(ends[last - 1])].double()
        zero = block.new_zeros(1, block.shape[1])
        bounds = torch.from_numpy(ends[first:last] - start).to(frames.device)
        starts = bounds - torch.from_numpy(lengths[first:last]).to(frames.device)
        for out, values in ((sums, block), (squares, block.square())):
            cumulative = torch.cat([zero, values.cumsum(0)])
            out.append(cumulative[bounds] - cumulative[starts])
        first = last
    if not sums:
        empty = frames.new_zeros(0, frames.shape[1], dtype=torch.float64)
        return empty, empty
    return torch.cat(sums), torch.cat(squares)


def _pad(rows: list[np.ndarray], fill: int) -> torch.Tensor:
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


@dataclass(frozen=True)
class HeadCost:
    """A head's useful work, for the floor and the cost model: multiply-adds per frame (or pooled vector)."""

    macs_per_row: int
    rows_per_slot: float  # frames per utterance, or 1 for heads that pool first

    def flops_per_step(self, members: int, batch_size: int) -> float:
        return 6.0 * self.macs_per_row * self.rows_per_slot * batch_size * members  # forward + backward


def head_cost(head: str, features: FeatureSet | DeviceFeatures, n_classes: int, config: TrainConfig) -> HeadCost:
    """A stepped head's useful work: frames per slot are those its training steps read (:attr:`TrainConfig.train_frames`)."""
    head_class = HEADS[head]
    lengths = np.asarray(features.lengths, dtype=float)
    if config.train_frames and head_class.frame_mean:
        lengths = np.minimum(lengths, config.train_frames)
    rows = 1.0 if head_class.pools_first else float(np.mean(lengths)) if len(lengths) else 1.0
    return HeadCost(head_class.matmul_flops(features.dim, n_classes), rows)


def members_per_chunk(
    head: str, features: FeatureSet | DeviceFeatures, config: TrainConfig, device: torch.device, n_classes: int
) -> int:
    """How many runs one ensemble step holds within the memory budget (on CUDA, the memory free once
    :func:`prepared_inputs` has made what the head reads)."""
    head_class = HEADS[head]
    budget_mb, fewest = config.memory_mb, 1
    if budget_mb is None:
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            free += torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)  # torch's cache, unused
            budget_mb = int(0.6 * max(free, 0) / 2**20)
        else:
            budget_mb, fewest = CPU_CHUNK_MB, CPU_MIN_MEMBERS
    if solved(head, config):  # attention's runs are fitted one at a time; a chunk shares their pooled start
        width = head_class.input_width(features.dim)
        # every row's logits and their gradients; the weights, their gradient and the L-BFGS history
        per_member = 4 * (n_classes * len(features) * 8 + width * (n_classes + 1) * (2 * LBFGS_HISTORY + 4))
        return max(fewest, int(budget_mb * 2**20 // per_member))
    if head_class.pools_first:
        return 4096
    longest = float(np.max(features.lengths)) if len(features) else 1.0
    mean = float(np.mean(features.lengths)) if len(features) else 1.0
    per_slot = min(longest, 2 * mean)  # with slack for long batches
    if config.train_frames and head_class.frame_mean:
        per_slot = min(per_slot, config.train_frames)
    rows = config.batch_size * per_slot  # packed frames per member
    activation_bytes = 2 if uses_autocast(device, config) else 4
    # gathered frames in the product dtype (and attn_pool's standardised float32 copy); the slot membership;
    # per hidden unit: the activation, its dropout mask and its gradient
    per_member = rows * (features.dim * (activation_bytes + 4) + config.batch_size * 4 + head_class.hidden_units(features.dim) * 3 * activation_bytes)
    return max(fewest, int(budget_mb * 2**20 // per_member))


Advance = Callable[[int], None]


def train_runs(
    head: str,
    features: FeatureSet,
    labels: np.ndarray,
    runs: list[Run],
    n_classes: int,
    config: TrainConfig,
    advance: Advance | None = None,
    uploaded: DeviceFeatures | None = None,
) -> list[np.ndarray]:
    """Train every run and return its predictions on its test positions.

    Runs of one call must share a step count (any sizes under the ``steps``
    schedule).  ``labels`` are class indices aligned with the feature set's
    rows.  ``advance(n)`` is told of every n run-steps done.
    """
    if head not in HEADS:
        raise BudgetError(f"{head!r} is not an ensemble head ({', '.join(HEADS)}); budget.registry trains the others")
    if not runs:
        return []
    if not solved(head, config) and len({config.steps_for(len(run.train)) for run in runs}) != 1:
        raise BudgetError("runs trained together must take the same number of steps")
    device = training_device(config)
    inputs = uploaded or DeviceFeatures.upload(features, device)
    fit = _solve if solved(head, config) else _train_ensemble
    inputs = prepared_inputs(head, inputs, config)  # before free memory sizes the chunks
    chunk = members_per_chunk(head, inputs, config, device, n_classes)
    predictions: list[np.ndarray] = []
    for start in range(0, len(runs), chunk):
        try:
            predictions += fit(head, inputs, labels, runs[start : start + chunk], n_classes, config, advance)
        except torch.cuda.OutOfMemoryError:
            if solved(head, config) and not HEADS[head].pools_first:
                raise BudgetError(
                    f"CUDA out of memory fitting {head} on one run's frames; "
                    "crop utterances shorter (--max-seconds) or train this head with --device cpu"
                ) from None
            raise BudgetError(
                f"CUDA out of memory training {head} with {min(chunk, len(runs))} runs at once; set a smaller "
                f"memory_mb in the study's config (now {config.memory_mb or 'from free memory'})"
            ) from None
    return predictions


def prepared_inputs(head: str, inputs: DeviceFeatures, config: TrainConfig) -> DeviceFeatures:
    """What a head reads, made once per feature set (before free memory sizes the chunks, and outside any timing):
    the stored statistics; for fitted attention the frames, averaged over its window; for stepped frame heads the
    frames centred in the product dtype."""
    if HEADS[head].pools_first:
        return inputs
    if solved(head, config):
        return inputs.windowed(config.attention_window)
    return inputs.centred(product_dtype(inputs.frames.device, config))


def _train_ensemble(head_name, inputs: DeviceFeatures, labels, runs, n_classes, config, advance, predict=True) -> list[np.ndarray]:
    """Step ``runs`` as one ensemble on :func:`prepared_inputs` and return each run's test predictions."""
    device = inputs.frames.device
    head_class = HEADS[head_name]
    kind = head_class.pooled_kind
    seeds = [member_seeds(run) for run in runs]
    generators = [torch.Generator().manual_seed(init) for init, _ in seeds]
    head: EnsembleHead = head_class(generators, inputs.dim, n_classes, dropout=config.dropout)
    head.set_standardisation(*inputs.standardisation(runs, kind))
    head.to(device)
    steps = config.steps_for(len(runs[0].train))
    optimiser, schedule = make_optimiser(head.parameters(), config, steps)
    orders = np.stack([data_order(run, steps, config.batch_size) for run in runs], axis=1)  # (steps, E, B)
    widths, samples = None, None
    if config.train_frames and head_class.frame_mean:
        draws = np.stack([frame_starts(run, steps, config.batch_size) for run in runs], axis=1)
        counts, starts = frame_samples(inputs.lengths, orders, draws, config.train_frames)
        widths = bucketed(counts.sum(axis=-1).max(axis=-1))
        samples = FrameSample(torch.from_numpy(counts).to(device), torch.from_numpy(starts).to(device))
    elif not head_class.pools_first:
        widths = _packed_widths(inputs, orders)
    order_t = torch.from_numpy(orders).to(device)
    label_t = torch.from_numpy(np.append(labels.astype(np.int64), 0)).to(device)  # index -1 -> a dummy label
    keys = torch.tensor([key for _, key in seeds], dtype=torch.int64, device=device)
    loss_fn = nn.CrossEntropyLoss(reduction="none")
    autocast = autocast_for(device, config)
    head.train()
    for step in range(steps):
        slots = order_t[step]
        sample = FrameSample(samples.counts[step], samples.starts[step]) if samples is not None else None
        batch = inputs.batch(slots, int(widths[step]) if widths is not None else 0, kind, sample)
        batch.keys = DropoutKeys(keys, step)
        with autocast:
            logits = head(batch)  # (E, B, C)
        valid = (slots >= 0).float()
        losses = loss_fn(logits.float().reshape(-1, n_classes), label_t[slots].reshape(-1)).view_as(valid)
        loss = ((losses * valid).sum(1) / valid.sum(1)).sum()  # each member's mean: members never mix
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        if advance:
            advance(len(runs))
    return _predict(head, inputs, runs, kind, autocast) if predict else []


def _solve(head_name, inputs: DeviceFeatures, labels, runs, n_classes, config, advance) -> list[np.ndarray]:
    """Each run's predictions from its head fitted to an optimum: the pooled heads all runs at once
    (:func:`fit_full_batch`), attention each run alone (:func:`fit_attention`)."""
    device = inputs.frames.device
    if not HEADS[head_name].pools_first:
        predictions = []
        for run, head in zip(runs, fit_attention(inputs, labels, runs, n_classes, config), strict=True):
            predictions.append(attention_logits(head, inputs, run.test)[0].argmax(-1).cpu().numpy())
            if advance:
                advance(1)
        return predictions
    head = fit_full_batch(head_name, inputs, labels, runs, n_classes, config)
    if advance:
        advance(len(runs))
    rows = np.unique(np.concatenate([run.test for run in runs]))
    with torch.inference_mode():
        predicted = head.shared_logits(inputs.pooled(head.pooled_kind)[torch.from_numpy(rows).to(device)]).argmax(-1)
    predicted = predicted.cpu().numpy()  # (E, rows)
    return [predicted[e, np.searchsorted(rows, run.test)] for e, run in enumerate(runs)]


@torch.inference_mode()
def attention_logits(head: EnsembleHead, inputs: DeviceFeatures, rows: np.ndarray) -> torch.Tensor:
    """Every member's logits ``(E, len(rows), classes)`` for the utterances ``rows``."""
    return head.shared_logits(*inputs.gathered(rows))


@dataclass
class _Rows:
    """Rows of a full-batch objective: what the head's ``shared_logits`` reads of them, their one-hot targets and
    each member's weight on each row ``(E, rows)``: 1/n on the member's n training rows, else 0."""

    inputs: tuple[torch.Tensor, ...]
    target: torch.Tensor
    share: torch.Tensor


def _minimise(head: EnsembleHead, rows: _Rows, strength: torch.Tensor, config: TrainConfig) -> EnsembleHead:
    """Full-batch L-BFGS on ``head``'s weights: every member's mean cross-entropy over its rows plus
    ``strength k |W|^2 / 2`` for each penalised weight (:meth:`EnsembleHead.penalties`); at most ``config.steps``
    iterations, until no gradient element exceeds ``config.lbfgs_tolerance``."""
    optimiser = torch.optim.LBFGS(
        list(head.parameters()), max_iter=config.steps, history_size=LBFGS_HISTORY,
        tolerance_grad=config.lbfgs_tolerance, tolerance_change=0.0, line_search_fn="strong_wolfe",
    )  # fmt: skip

    def objective() -> torch.Tensor:
        optimiser.zero_grad()
        norms = sum(k * weight.square().flatten(1).sum(1) for weight, k in head.penalties())  # (E,)
        logits = head.shared_logits(*rows.inputs)  # (E, rows, classes)
        losses = torch.logsumexp(logits, -1) - (logits * rows.target).sum(-1)  # cross-entropy, (E, rows)
        loss = (rows.share * losses).sum() + 0.5 * (strength * norms).sum()
        loss.backward()
        return loss

    optimiser.step(objective)
    return head.eval()


def _targets(labels: np.ndarray, rows: np.ndarray, n_classes: int, device: torch.device) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.from_numpy(labels[rows].astype(np.int64)), n_classes).to(device, torch.float32)


def _zero_head(head_class: type[EnsembleHead], n_members: int, dim: int, n_classes: int, stats, device) -> EnsembleHead:
    """A head of ``n_members`` with every weight zero (one start for every run, whatever its seed)."""
    head = head_class([torch.Generator() for _ in range(n_members)], dim, n_classes, dropout=0.0)
    head.set_standardisation(*stats)
    head.to(device)
    with torch.no_grad():
        for parameter in head.parameters():
            parameter.zero_()
    return head


def fit_full_batch(
    head_name: str, inputs: DeviceFeatures, labels: np.ndarray, runs: list[Run], n_classes: int, config: TrainConfig,
    pooled: torch.Tensor | None = None, stats: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> EnsembleHead:  # fmt: skip
    """Fit every run's pooled head to its optimum: one full-batch L-BFGS on the sum of the runs' objectives.

    A run's objective is its mean cross-entropy plus ``k |W|^2 / (2 C n)`` for
    each penalised weight (scikit-learn's for the classifier, ``k`` = 1, with
    ``n`` training examples; :meth:`EnsembleHead.penalties`), on its own
    standardised inputs.  The objectives share no parameter and are strictly
    convex, so mates only change the path (L-BFGS's history and line search
    are joint): each run ends at its own optimum, within
    ``config.lbfgs_tolerance`` of the run solved alone.  Logits come from rows
    shared by all runs (standardisation folded into the weights), so no run's
    data is copied.  Every weight starts at zero.  ``pooled`` and ``stats``
    replace the stored statistics and the runs' standardisation (attention's
    start: :func:`fit_attention`).
    """
    device = inputs.frames.device
    head_class = HEADS[head_name]
    head = _zero_head(head_class, len(runs), inputs.dim, n_classes,
                      stats or inputs.standardisation(runs, head_class.pooled_kind), device)  # fmt: skip
    rows = np.unique(np.concatenate([run.train for run in runs]))  # every run's training rows, sorted
    share = torch.zeros(len(runs), len(rows), device=device)
    for e, run in enumerate(runs):  # once per fit, not per iteration
        share[e, torch.from_numpy(np.searchsorted(rows, run.train)).to(device)] = 1 / len(run.train)
    x = (inputs.pooled(head_class.pooled_kind) if pooled is None else pooled)[torch.from_numpy(rows).to(device)]
    strength = torch.tensor([1 / (config.l2_c * len(run.train)) for run in runs], device=device)
    return _minimise(head, _Rows((x,), _targets(labels, rows, n_classes, device), share), strength, config)


def fit_attention(inputs: DeviceFeatures, labels: np.ndarray, runs: list[Run], n_classes: int, config: TrainConfig):
    """Yield each run's attention head (one member), fitted alone to an optimum of its objective.

    The objective is :func:`fit_full_batch`'s, with the score weights' stronger
    penalty, on the run's own training utterances only.  The fit starts where attention is uniform and the
    classifier is at its optimum for it: mean pooling of the run's standardised
    frames, a convex problem solved for every run at once on the utterances'
    mean frames (uniform attention pools exactly those).  A run never sees its
    mates: the start is separable and each fit is its own.
    """
    device = inputs.frames.device
    mean, std = inputs.standardisation(runs, "")
    start = None
    if config.attention_start == "pooled":
        start = fit_full_batch("mean_pool", inputs, labels, runs, n_classes, config, inputs.frame_means(), (mean, std))
    for e, run in enumerate(runs):
        head = _zero_head(HEADS["attn_pool"], 1, inputs.dim, n_classes, (mean[e : e + 1], std[e : e + 1]), device)
        if start is not None:
            with torch.no_grad():
                head.classifier.weight.copy_(start.classifier.weight[e : e + 1])
                head.classifier.bias.copy_(start.classifier.bias[e : e + 1])
        rows = _Rows(inputs.gathered(run.train), _targets(labels, run.train, n_classes, device),
                     torch.full((1, 1), 1 / len(run.train), device=device))  # fmt: skip
        yield _minimise(head, rows, torch.tensor([1 / (config.l2_c * len(run.train))], device=device), config)


def _packed_widths(inputs: DeviceFeatures, orders: np.ndarray) -> np.ndarray:
    """Per step (the first axis of ``orders``), the batch's packed width: known up front, so steps never wait on
    the device."""
    lengths = np.append(inputs.lengths, 0)  # slot -1 -> no frames
    return bucketed(lengths[orders].sum(axis=-1).max(axis=-1))


def bucketed(frames: np.ndarray) -> np.ndarray:
    """Frame counts rounded up, by at most 1/32, to a multiple of a power of two.

    A study's products then take a few dozen shapes rather than one per
    step: CPU matrix libraries build a kernel for each new shape, and with a
    new width every step an mlp_pool step ran about a quarter slower.
    """
    frames = np.maximum(np.asarray(frames, dtype=np.int64), 1)
    grain = 2 ** np.maximum(np.floor(np.log2(frames)).astype(np.int64) - 5, 0)
    return -(-frames // grain) * grain


@torch.inference_mode()
def _predict(head: EnsembleHead, inputs: DeviceFeatures, runs: list[Run], kind: str, autocast) -> list[np.ndarray]:
    head.eval()
    device = inputs.frames.device
    tests = _pad([run.test for run in runs], -1).numpy()
    outputs = []
    for start in range(0, tests.shape[1], EVAL_SLOTS):
        slots = tests[:, start : start + EVAL_SLOTS]
        width = int(_packed_widths(inputs, slots))
        batch = inputs.batch(torch.from_numpy(slots).to(device), width, kind)
        with autocast:
            outputs.append(head(batch).float().argmax(-1).cpu().numpy())
    predicted = np.concatenate(outputs, axis=1)
    return [predicted[e, : len(run.test)] for e, run in enumerate(runs)]


def train_logreg(features: FeatureSet, labels: np.ndarray, run: Run, c: float) -> np.ndarray:
    """The reference: scikit-learn logistic regression on standardised mean-pooled features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))
    model.fit(features.mean[run.train], labels[run.train])
    return model.predict(features.mean[run.test])


def units(head: str, run: Run, config: TrainConfig) -> int:
    """A run's units of work for the cost model and progress: its optimiser steps, or one fit for a solved head."""
    return 1 if solved(head, config) else config.steps_for(len(run.train))


@functools.cache
def warm_up(device: torch.device) -> None:
    """Pay torch's one-time costs before anything is timed: constructing its first optimiser imports
    ``torch._dynamo`` (about 800 modules, near a second on a 2-core CPU), ten times a pooled head's fit; a
    GPU's first product creates its BLAS handle."""
    torch.optim.SGD([torch.zeros(1, requires_grad=True)])
    if device.type == "cuda":
        torch.ones(8, 8, device=device).matmul(torch.ones(8, 8, device=device)).sum().item()


@dataclass(frozen=True)
class CostModel:
    """Seconds per unit of :func:`units` (a run-step, or one fit) for a run of ``n`` training examples: ``base +
    per_example * n``, the line through probes timed at a job's smallest and largest size.

    A stepped run's units are its steps and a step's cost barely moves with
    the subset; a fitted run is one unit whose cost grows with the examples it
    fits (more rows, more iterations), so a probe at one size alone would
    misprice every other.
    """

    base: float = 0.0
    per_example: float = 0.0

    def unit_seconds(self, n_train: float) -> float:
        return max(self.base + self.per_example * n_train, 0.0)

    @classmethod
    def probed(cls, measure: Callable[[list[Run]], float], runs: list[Run]) -> CostModel:
        """Time ``measure`` (seconds per unit for some runs of one size) at the smallest and largest size of ``runs``.

        A size is a size label: ``full`` runs hold a different number of
        examples in each fold, and probing only those with the most examples
        would time an ensemble of one fold's few runs, where the study trains
        every fold's ``full`` runs together whenever their budgets agree (at the
        step cap).
        """
        by_size: dict[int | str, list[Run]] = {}
        for run in runs:
            by_size.setdefault(run.size, []).append(run)
        if not by_size:
            return cls()
        examples = {size: float(np.mean([len(run.train) for run in group])) for size, group in by_size.items()}
        ordered = sorted(examples, key=examples.__getitem__)
        (n0, s0), *rest = [(examples[size], measure(by_size[size])) for size in dict.fromkeys((ordered[0], ordered[-1]))]
        if not rest or rest[0][0] == n0:
            return cls(s0)
        ((n1, s1),) = rest
        slope = (s1 - s0) / (n1 - n0)
        return cls(s0 - slope * n0, slope)


def cost_model(
    head: str, features: FeatureSet, labels: np.ndarray, runs: list[Run], n_classes: int, config: TrainConfig,
    uploaded: DeviceFeatures | None = None,
) -> CostModel:  # fmt: skip
    """The cost of ``runs`` of an ensemble head: :func:`measure_unit_seconds` at their smallest and largest size."""
    if not runs:
        return CostModel()
    device = training_device(config)
    warm_up(device)
    inputs = prepared_inputs(head, uploaded or DeviceFeatures.upload(features, device), config)  # untimed: once
    return CostModel.probed(lambda sample: measure_unit_seconds(head, inputs, labels, sample, n_classes, config), runs)


def short_call_seconds(work: Callable[[], object], short: float = 1.0) -> float:
    """Seconds one call of ``work`` takes, the lesser of two where the first took under ``short``: a fit that
    takes milliseconds pays first-call costs (caches, allocations) several times over in one timing, which
    a study's many fits share."""
    started = time.perf_counter()
    work()
    first = time.perf_counter() - started
    if first >= short:
        return first
    started = time.perf_counter()
    work()
    return min(first, time.perf_counter() - started)


def measure_unit_seconds(
    head: str, inputs: DeviceFeatures, labels: np.ndarray, runs: list[Run], n_classes: int, config: TrainConfig,
    timed_steps: int = PROBE_STEPS,
) -> float:  # fmt: skip
    """Seconds per unit of :func:`units` for these runs (of one size), on :func:`prepared_inputs`.

    Ensembles are timed over ``timed_steps`` steps of one chunk and divided by
    the members stepped; pooled heads by the fit of one chunk, attention by
    the fits of a few runs.
    """
    device = inputs.frames.device
    if solved(head, config):  # pooled heads: one chunk, as they are fitted; attention: a few runs, each alone
        chunk = members_per_chunk(head, inputs, config, device, n_classes)
        sample = runs[: chunk if HEADS[head].pools_first else min(SOLVE_PROBE_RUNS, chunk)]
        return short_call_seconds(lambda: _solve(head, inputs, labels, sample, n_classes, config, None)) / len(sample)
    sample = runs[: members_per_chunk(head, inputs, config, device, n_classes)]
    probe = replace(config, schedule="steps", steps=timed_steps + 1, max_epochs=0)
    clock = []

    def tick(_n: int) -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        clock.append(time.perf_counter())

    # Twice, timing the second: the first builds a kernel for each new batch width, which a whole run pays once
    # for a few dozen widths but a short probe would pay on nearly every step.
    _train_ensemble(head, inputs, labels, sample, n_classes, probe, None, predict=False)
    _train_ensemble(head, inputs, labels, sample, n_classes, probe, tick, predict=False)
    return (clock[-1] - clock[0]) / timed_steps / len(sample)
