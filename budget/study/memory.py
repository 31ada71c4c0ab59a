"""What a study's features take in memory, known from the store's index before anything is loaded, and the guard
that, where a copy of every frame would not fit, leaves the frames in the store (read as training asks for them) or
refuses, in one line, a study that would not fit even so, instead of letting the system kill it.

A study holds every feature set it trains on for its whole run: as loaded
(the per-utterance statistics in float32, which a CPU trains on as they are,
and the frames where a head reads them, at the store's precision), the frames
once more on the training device (float32 on a CPU), the copy each frame head
makes of them (mlp_pool's centred frames in its product precision,
attention's segment means), and for each copy a float64 sum and sum of
squares per utterance (the frames' own sums, made for mlp_pool's centre,
are let go before its copy's are made).  Fitted attention also gathers one run's segments at a
time, at most all of them again.  On CUDA the device's copies are in the GPU's
memory; the machine holds the loaded features alone.  Frames left in the
store take none of this but the sums and attention's one run of segments: a
step reads its own frames from the files, and attention writes its segment
means to a scratch file beside them and reads them from there.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from budget.engine.config import TrainConfig, solved
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


#: What a training worker process holds beside the features it shares: an interpreter with torch, a chunk's
#: activations and an evaluation batch's frames (benchmarks/RESULTS.md has a worker's measured share).
WORKER_BYTES = 1 * GB


def training_workers(requested: int | None, train: TrainConfig) -> int:
    """The worker processes a study trains in on this machine: as many as asked, or (unset) on a CPU one per torch
    thread, as many as the memory available now (features loaded) gives :data:`WORKER_BYTES` each; one on a GPU,
    which one process keeps busy."""
    if requested is not None:
        return requested
    if training_device(train).type != "cpu":
        return 1
    import torch

    available = available_bytes()
    return max(1, min(torch.get_num_threads(), available // WORKER_BYTES if available is not None else 1))


def check_memory(needs: list[FeatureMemory], max_memory: float | None, log, in_store: bool = False) -> set[str]:
    """Say what the study's features take and return the feature sets whose frames stay in the store: every one
    that can with ``in_store``, else none where a copy of every frame fits within ``max_memory`` GB (default:
    what the machine has available now), else the largest first until the rest fits; raise one clear error where
    even that exceeds it."""
    total = sum(need.bytes for need in needs)
    limit = max_memory * GB if max_memory is not None else available_bytes()
    mapped: set[str] = set()
    for need in sorted(needs, key=lambda need: need.bytes, reverse=True):
        if (in_store or (limit is not None and total > limit)) and need.mapped is not None:
            total -= need.bytes - need.mapped
            mapped.add(need.name)
    where = f"--max-memory {max_memory:g}" if max_memory is not None else "available now; --max-memory sets a limit"
    parts = ", ".join(_part(need, need.name in mapped) for need in needs)
    if limit is None:
        log(f"memory: the features this study trains on take about {total / GB:.2f} GB: {parts}")
        return mapped
    log(f"memory: the features this study trains on take about {total / GB:.2f} GB of {limit / GB:.1f} GB ({where}): "
        f"{parts}")  # fmt: skip
    if total > limit:
        largest = max(needs, key=lambda need: need.mapped if need.name in mapped else need.bytes)
        size = largest.mapped if largest.name in mapped else largest.bytes
        raise BudgetError(
            f"this study's features need about {total / GB:.1f} GB, more than {limit / GB:.1f} GB ({where}); the "
            f"largest is {largest.name}, {size / GB:.1f} GB ({_part(largest, largest.name in mapped, False)}): crop "
            "utterances shorter (--max-seconds), train heads that pool first on it (logreg, mean_pool, meanmax_pool "
            "read statistics only), study fewer feature sets or layers at once, or set --max-memory if more memory "
            "will be free"
        )
    return mapped


def _part(need: FeatureMemory, mapped: bool, named: bool = True) -> str:
    name = f"{need.name} " if named else ""
    if not mapped:
        return f"{name}{need.bytes / GB:.2f} GB ({need.holds})" if named else need.holds
    held = f"{need.holds}, read from the store as training asks: a copy would take {need.bytes / GB:.2f} GB"
    return f"{name}{need.mapped / GB:.2f} GB ({held})" if named else held
