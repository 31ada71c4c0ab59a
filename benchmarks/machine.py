"""A one-line description of the machine a benchmark ran on."""

from __future__ import annotations

import os
import platform
from pathlib import Path

#: CPU flags that decide how fast the engine's products run, in the order they are named.
_MATMUL_FLAGS = {"amx_bf16": "AMX", "avx512_bf16": "AVX-512 BF16", "avx512f": "AVX-512", "avx2": "AVX2"}


def describe_cpu() -> str:
    """The CPU's name, family and model (which tell generations apart where names do not) and its best
    matrix-product instructions, from /proc/cpuinfo where there is one."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        return platform.processor() or "unknown CPU"
    fields: dict[str, str] = {}
    for line in cpuinfo.read_text().splitlines():
        key, _, value = line.partition(":")
        if not key.strip():
            break  # the first processor's block is enough
        fields.setdefault(key.strip(), value.strip())
    flags = set(fields.get("flags", "").split())
    vector = next((name for flag, name in _MATMUL_FLAGS.items() if flag in flags), "no AVX2")
    return f"{fields.get('model name', 'unknown CPU')} (family {fields.get('cpu family', '?')} model {fields.get('model', '?')}, {vector})"


def describe_machine() -> str:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{describe_cpu()}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"{gpu}, Python {platform.python_version()}"
    )
