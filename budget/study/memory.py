"""What a study's features and training take in memory, known from the store's index before anything is loaded, and
the plan that fits them: where a copy of every frame would not fit beside the least training needs, the frames stay
in the store (read as training asks for them); training gets what the features leave (fewer worker processes, then
smaller evaluation batches); a study that would not fit even so is refused in one line instead of being killed.

A study holds every feature set it trains on for its whole run: as loaded
(the per-utterance statistics in float32, which a CPU trains on as they are,
and the frames where a head reads them, at the store's precision), the frames
once more on the training device (float32 on a CPU), the copy each frame head
makes of them (mlp_pool's centred frames in its product precision,
attention's segment means), and for each copy a float64 sum and sum of
squares per utterance (the frames' own sums, made for mlp_pool's centre,
are let go before its copy's are made).  Fitted attention also gathers
one run's segments at a time, at most all of them again.  On CUDA the
device's copies are in the GPU's memory; the machine holds the loaded
features alone.  Frames left in the
store take none of this but the sums and attention's one run of segments: a
step reads its own frames from the files, and attention writes its segment
means to a scratch file beside them and reads them from there.

Training adds, on a CPU, each process it starts (:data:`PROCESS_BYTES`) and in
each process that trains a chunk's activations and an evaluation batch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

from budget.engine.adam import EVAL_VALUES
from budget.engine.config import TrainConfig, solved
from budget.engine.cost import CPU_CHUNK_MB
from budget.engine.device import product_dtype, training_device
from budget.errors import BudgetError
from budget.features.store import Footprint
from budget.registry import EnsembleSpec, head_spec

GB = 2**30
FLOAT32 = 4
FLOAT64 = 8


@dataclass(frozen=True)
class FeatureMemory:
    """One feature set's bytes for a study, with what they hold, in words; ``mapped``, its bytes with the frames
    left in the store (None where its heads need a copy)."""

    name: str
    bytes: int
    holds: str
    mapped: int | None = None


def feature_memory(name: str, footprint: Footprint, heads: list[str], train: TrainConfig) -> FeatureMemory:
    """The bytes a study training ``heads`` on a feature set of ``footprint`` holds for it (the module docstring
    says what is counted), with every frame copied and, where every frame head is the engine's, with the frames
    left in the store."""
    on_cpu = training_device(train).type == "cpu"
    statistics = 2 * footprint.utterances * footprint.width * FLOAT32  # mean and max, which a CPU trains on as loaded
    specs = [head_spec(head) for head in heads]
    frame_heads = [spec for spec in specs if spec.reads_frames]
    if not frame_heads:
        return FeatureMemory(name, statistics, "statistics only")
    readers = ", ".join(spec.name for spec in frame_heads)
    holds = f"{footprint.frames:,} frames of {footprint.width} for {readers}"
    ensemble = [spec for spec in frame_heads if isinstance(spec, EnsembleSpec)]
    if not on_cpu:
        frames = footprint.frames * footprint.width * footprint.itemsize
        return FeatureMemory(name, statistics + frames, holds, statistics if len(ensemble) == len(frame_heads) else None)
    sums = 2 * FLOAT64 * footprint.utterances * footprint.width * len(ensemble)
    per_value = footprint.itemsize + FLOAT32 + sum(_copy_per_value(spec, train, footprint) for spec in frame_heads)
    copied = statistics + sums + int(footprint.frames * footprint.width * per_value)
    if len(ensemble) < len(frame_heads):
        return FeatureMemory(name, copied, holds)
    gathered = sum(_gathered_per_value(spec, train, footprint) for spec in ensemble)
    return FeatureMemory(name, copied, holds, statistics + sums + int(footprint.frames * footprint.width * gathered))


def _copy_per_value(spec, train: TrainConfig, footprint: Footprint) -> float:
    """Bytes per frame value a frame head adds on a CPU: fitted attention's segment means and one run's gathered
    copy of them (at most as many as the frames; every frame: the gathered copy alone); a stepped head centres the
    frames in its product precision; the bimodal heads read the loaded frames."""
    if not isinstance(spec, EnsembleSpec):
        return 0.0
    if solved(spec.module, train):
        return _gathered_per_value(spec, train, footprint) * (2 if train.attention_segments else 1)
    return float(product_dtype(training_device(train), train).itemsize)


def _gathered_per_value(spec: EnsembleSpec, train: TrainConfig, footprint: Footprint) -> float:
    """Bytes per frame value of one fitted attention run's gathered segments (at most all of them; every frame
    without segments); nothing for a stepped head, which reads a batch at a time."""
    if not solved(spec.module, train):
        return 0.0
    if not train.attention_segments:
        return float(FLOAT32)
    return FLOAT32 * min(1.0, footprint.utterances * train.attention_segments / max(footprint.frames, 1))


def available_bytes() -> int | None:
    """Memory the machine can give a new allocation now (Linux's MemAvailable: free memory and the page cache it can
    drop); None where the system does not say."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


#: What a process holds before it trains: an interpreter with torch and the toolkit (a training worker's resident
#: memory less the features it shares, in benchmarks/RESULTS.md).
PROCESS_BYTES = GB // 2

#: The least a stepped frame head's evaluation batch is given where memory is short (a few utterances a run; one a
#: run at the least, whatever it takes).
LEAST_EVAL_BYTES = 64 * 2**20


@dataclass(frozen=True)
class MemoryPlan:
    """How a study fits its memory: the feature sets whose frames stay in the store, the processes it trains in,
    and the most an evaluation batch holds in each (``eval_mb``; None: the engine's bound)."""

    mapped: frozenset[str] = frozenset()
    workers: int = 1
    eval_mb: int | None = None


def plan_memory(needs: list[FeatureMemory], heads: list[str], train: TrainConfig, max_memory: float | None,
                workers: int | None, log, in_store: bool = False) -> MemoryPlan:  # fmt: skip
    """Say what the study's features and training take, and fit them within ``max_memory`` GB (default: what the
    machine has available now).

    Frames stay in the store for every feature set that can with
    ``in_store``, else for none where a copy of every frame fits beside the
    least training needs, else for the largest first until the rest fits.
    Training then gets what the features leave: ``workers`` processes (unset:
    one per torch thread on a CPU, as many as fit), each with a chunk's
    activations and an evaluation batch that shrinks to fit (a run's
    predictions do not depend on it).  One clear error where even the least
    exceeds the limit.
    """
    limit = int(max_memory * GB) if max_memory is not None else available_bytes()
    least = least_training_bytes(heads, train)
    total = sum(need.bytes for need in needs)
    mapped: set[str] = set()
    for need in sorted(needs, key=lambda need: need.bytes, reverse=True):
        if (in_store or (limit is not None and total + least > limit)) and need.mapped is not None:
            total -= need.bytes - need.mapped
            mapped.add(need.name)
    where = f"--max-memory {max_memory:g}" if max_memory is not None else "available now; --max-memory sets a limit"
    parts = ", ".join(_part(need, need.name in mapped) for need in needs)
    if limit is None:
        log(f"memory: the features this study trains on take about {total / GB:.2f} GB: {parts}")
    else:
        log(f"memory: the features this study trains on take about {total / GB:.2f} GB of {limit / GB:.1f} GB "
            f"({where}): {parts}")  # fmt: skip
    if limit is not None and total + least > limit:
        largest = max(needs, key=lambda need: need.mapped if need.name in mapped else need.bytes)
        size = largest.mapped if largest.name in mapped else largest.bytes
        raise BudgetError(
            f"this study's features need about {total / GB:.1f} GB and training at least {least / GB:.2f} GB more, "
            f"more than {limit / GB:.1f} GB ({where}); the largest is {largest.name}, {size / GB:.1f} GB "
            f"({_part(largest, largest.name in mapped, False)}): crop utterances shorter (--max-seconds), train heads "
            "that pool first on it (logreg, mean_pool, meanmax_pool read statistics only), study fewer feature sets "
            "or layers at once, or set --max-memory if more memory will be free"
        )
    plan = plan_training(heads, train, None if limit is None else limit - total, workers, where, log)
    return replace(plan, mapped=frozenset(mapped))


def plan_training(heads: list[str], train: TrainConfig, left: int | None, workers: int | None,
                  where: str = "available now", log=None) -> MemoryPlan:  # fmt: skip
    """The processes training runs in and their evaluation batch within ``left`` bytes (None: unknown, so the
    engine's bound): as many as asked, or one per torch thread on a CPU, as many as fit; one on another device.
    Said in one line to ``log``; one clear error where even one process's least does not fit."""
    activations, evaluation = _training_bytes(heads, train)
    least = least_training_bytes(heads, train)
    if workers is None:
        if training_device(train).type != "cpu" or left is None:
            workers = 1
        else:
            import torch

            workers = max(1, min(torch.get_num_threads(), (left - PROCESS_BYTES) // (PROCESS_BYTES + least)))
    plan = MemoryPlan(workers=workers)
    if left is not None:
        room = int(left - _processes(workers) * PROCESS_BYTES) // workers - activations
        if room < least - activations:
            needed = _processes(workers) * PROCESS_BYTES + workers * least
            fewer = "train in one process (--workers 1), " if workers > 1 else ""
            raise BudgetError(
                f"training in {workers} process{'es' if workers > 1 else ''} needs at least {needed / GB:.2f} GB "
                f"beside the features, more than the {max(left, 0) / GB:.2f} GB they leave ({where}): {fewer}give each "
                "chunk less (memory_mb in a config), crop utterances shorter (--max-seconds), or set --max-memory if "
                "more memory will be free"
            )
        plan = MemoryPlan(workers=workers, eval_mb=None if room >= evaluation else room // 2**20)
    if log:
        log(_training_line(plan, activations, evaluation))
    return plan


def least_training_bytes(heads: list[str], train: TrainConfig) -> int:
    """The least one process trains ``heads`` in beside the features: a chunk's activations and the least evaluation
    batch (:data:`LEAST_EVAL_BYTES`, where a head gathers frames to evaluate)."""
    activations, evaluation = _training_bytes(heads, train)
    return activations + min(evaluation, LEAST_EVAL_BYTES)


def _training_bytes(heads: list[str], train: TrainConfig) -> tuple[int, int]:
    """What one training process holds on a CPU while it trains: a chunk's activations, and an evaluation batch
    at the engine's bound (a stepped frame head's frames in float32 and in its product precision; nothing else
    gathers much); nothing on another device, which holds them itself."""
    device = training_device(train)
    if device.type != "cpu":
        return 0, 0
    activations = (train.memory_mb if train.memory_mb is not None else CPU_CHUNK_MB) * 2**20
    stepped = [spec for spec in map(head_spec, heads)
               if isinstance(spec, EnsembleSpec) and spec.reads_frames and not solved(spec.module, train)]  # fmt: skip
    evaluation = EVAL_VALUES * (FLOAT32 + product_dtype(device, train).itemsize) if stepped else 0
    return activations, evaluation


def _processes(workers: int) -> int:
    """Processes started to train in: none for one (this one trains), else the workers and the server they fork
    from."""
    return workers + 1 if workers > 1 else 0


def _training_line(plan: MemoryPlan, activations: int, evaluation: int) -> str:
    """What training adds, in one line of the study's log."""
    where = (f"up to {plan.workers} workers (for work of a minute or more) and the process they fork from, "
             f"{PROCESS_BYTES / GB:.1f} GB each") if plan.workers > 1 else "this process"  # fmt: skip
    batch = evaluation if plan.eval_mb is None else plan.eval_mb * 2**20
    total = _processes(plan.workers) * PROCESS_BYTES + plan.workers * (activations + batch)
    if not activations:
        return f"memory: training adds about {total / GB:.2f} GB: {where}; the training device holds the rest"
    shrunk = " (shrunk to fit; the predictions are the same)" if plan.eval_mb is not None else ""
    held = f" and evaluation batches of up to {batch / GB:.2f} GB{shrunk}" if evaluation else ""
    each = "each" if plan.workers > 1 else "with"
    return (f"memory: training adds about {total / GB:.2f} GB: {where}; {each} a chunk's activations "
            f"({activations / 2**20:.0f} MB){held}")


def _part(need: FeatureMemory, mapped: bool, named: bool = True) -> str:
    name = f"{need.name} " if named else ""
    if not mapped:
        return f"{name}{need.bytes / GB:.2f} GB ({need.holds})" if named else need.holds
    held = f"{need.holds}, read from the store as training asks: a copy would take {need.bytes / GB:.2f} GB"
    return f"{name}{need.mapped / GB:.2f} GB ({held})" if named else held
