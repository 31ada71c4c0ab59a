"""Where runs train and in what precision their frame products run: decided from the device, never timed."""

from __future__ import annotations

import functools
from contextlib import nullcontext
from dataclasses import replace

import torch

from budget.engine.config import TrainConfig
from budget.errors import BudgetError


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


def products_phrase(config: TrainConfig) -> str:
    """What the stepped frame heads multiply in under a config whose products are decided (:func:`with_products`)."""
    return "bf16 autocast" if config.bf16 else "float32"


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
    set, never timed: a timing depends on the machine's load, and the choice
    changes both a study's numbers and its cost.
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


@functools.cache
def warm_up(device: torch.device) -> None:
    """Pay torch's one-time costs before anything is timed: constructing its first optimiser imports
    ``torch._dynamo``, which costs more than a pooled head's fit; a GPU's first product creates its BLAS
    handle."""
    torch.optim.SGD([torch.zeros(1, requires_grad=True)])
    if device.type == "cuda":
        torch.ones(8, 8, device=device).matmul(torch.ones(8, 8, device=device)).sum().item()



#: glibc's mallopt parameters: the size from which an allocation is its own mapping, and the free memory at the
#: heap's top beyond which the heap is given back to the system.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def keep_freed_memory(mapped_from: int = 32 * 2**20, trimmed_from: int = 256 * 2**20) -> bool:
    """Have glibc keep memory freed below ``mapped_from`` bytes an allocation for reuse, and give the heap back only
    beyond ``trimmed_from`` free: a training step frees and allocates the same few MB of activations, which glibc's
    defaults hand back to the system and fault in afresh each step.
    For processes that only train; False where the C library is not glibc."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, mapped_from)) and bool(mallopt(_M_TRIM_THRESHOLD, trimmed_from))
