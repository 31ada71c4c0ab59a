"""What loading a study's features costs in memory as the corpus grows: frames, statistics alone, one layer.

    python benchmarks/scale.py [--sizes 1000,10000] [--layered 1000] [--width 768] [--folder /tmp/scale]

Writes synthetic feature stores in the store's own format (random float16
frames, ``--width`` wide, utterances of 2 to 10 s at 50 frames a second; no
audio: the keys are those of files that do not exist), one one-layer entry per
size in ``--sizes`` and a 13-layer ``:all`` entry of ``--layered`` utterances,
and prints each one's size on disk.  Then, each in a fresh child process, it
loads them as a study does and prints what the load allocated at its peak
(``tracemalloc``, which numpy reports to: the arrays it made) and the peak
resident memory it added (the child's VmHWM, reset just before loading, less
what it held then; Linux).  Resident memory also counts the pages of the store's
files the load read through its memory maps: the page cache's, which the kernel
frees under pressure, so ``allocated`` is what can run a machine out of memory:

* ``frames``: every frame, what a head that reads frames loads;
* ``statistics``: the per-utterance mean and max only, what a study whose heads
  all pool first loads;
* ``layer 6 of 13``: one layer of the ``:all`` entry, against ``frames`` of a
  one-layer entry of as many utterances.

The store is written once into ``--folder`` (kept, so a second run only loads).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd

from budget.features.base import FeatureExtractor
from budget.features.entries import EntrySettings
from budget.features.store import FeatureStore

FRAME_RATE = 50
LAYERS = 13
SHARD_UTTERANCES = 256


class SyntheticEncoder(FeatureExtractor):
    """Stands for an encoder whose features were stored: it is never run, only named."""

    frame_rate = float(FRAME_RATE)

    def __init__(self, width: int, layers: int | None, utterances: int):
        super().__init__(f"synthetic{width}-{utterances}" + (":all" if layers else ""))
        self.width, self.layers, self.utterances = width, layers, utterances

    def identity(self):
        return {"kind": "synthetic", "width": self.width, "layers": self.layers, "utterances": self.utterances}

    def layer_names(self):
        return [f"layer{k}" for k in range(self.layers)] if self.layers else None

    def _extract(self, inputs):
        raise RuntimeError("synthetic features are written, not extracted")


def manifest(n: int) -> pd.DataFrame:
    """``n`` utterances of files that do not exist, four classes, five groups."""
    ids = [f"u{i:06d}" for i in range(n)]
    return pd.DataFrame({"utt_id": ids, "path": [f"/nonexistent/{u}.wav" for u in ids], "text": "",
                         "label": np.array(["neutral", "happy", "sad", "angry"])[np.arange(n) % 4],
                         "group": [f"g{i % 5}" for i in range(n)], "speaker": [f"s{i % 10}" for i in range(n)]})  # fmt: skip


def write(store: FeatureStore, encoder: SyntheticEncoder, table: pd.DataFrame, settings: EntrySettings) -> int:
    """Write the entry (unless there) and return its size on disk in bytes."""
    entry = settings.entry(store.root, encoder)
    if not entry.described():
        rng = np.random.default_rng(0)
        keys = settings.utterance_keys(encoder, table)
        shape = (LAYERS, encoder.width) if encoder.layers else (encoder.width,)
        with entry.lock():
            FeatureStore._describe(entry, encoder, settings.identity(encoder), shape)
            for start in range(0, len(table), SHARD_UTTERANCES):
                rows = slice(start, start + SHARD_UTTERANCES)
                lengths = rng.integers(2 * FRAME_RATE, 10 * FRAME_RATE + 1, len(table[rows]))
                outputs = [rng.standard_normal((n, *shape), dtype=np.float32) for n in lengths]
                entry.write_shard(keys[rows], list(table["utt_id"][rows]), outputs, [""] * len(outputs), "float16")
    return sum(p.stat().st_size for p in entry.folder.rglob("*") if p.is_file())


def _reset_peak() -> None:
    """Start this process's peak resident memory (VmHWM) afresh from what it holds now (Linux 4.0 on)."""
    Path("/proc/self/clear_refs").write_text("5")


def _peak_bytes() -> int:
    status = Path("/proc/self/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1]) * 1024


def _resident_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize()


def _load(root: str, width: int, layers: int | None, n: int, layer: int | None, frames: bool, answer) -> None:
    store, table = FeatureStore(root), manifest(n)
    encoder = SyntheticEncoder(width, layers, n)
    _reset_peak()  # the peak so far is the imports'
    before = _resident_bytes()
    tracemalloc.start()
    features = store.load(encoder, table, EntrySettings(), layer=layer, frames=frames)
    _, allocated = tracemalloc.get_traced_memory()
    held = 0 if features.frames is None else features.frames.nbytes
    answer.send((allocated, _peak_bytes() - before, held + features.mean.nbytes + features.max.nbytes))


def measured(root: Path, width: int, layers: int | None, n: int, layer: int | None, frames: bool
             ) -> tuple[int, int, int]:  # fmt: skip
    """The peak of what a fresh process allocated loading the entry, its peak resident memory added, and the bytes
    the loaded arrays hold."""
    receive, send = multiprocessing.Pipe(duplex=False)
    child = multiprocessing.get_context("spawn").Process(target=_load, args=(str(root), width, layers, n, layer, frames, send))
    child.start()
    result = receive.recv()
    child.join()
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,10000", help="utterances of each one-layer store")
    parser.add_argument("--layered", type=int, default=1000, help="utterances of the 13-layer :all store (0: none)")
    parser.add_argument("--width", type=int, default=768)
    parser.add_argument("--folder", type=Path, default=Path("/tmp/budget-scale"))
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    store, settings = FeatureStore(args.folder), EntrySettings()
    rows = []
    for n in sizes:
        on_disk = write(store, SyntheticEncoder(args.width, None, n), manifest(n), settings)
        for frames in (True, False):
            rows.append(_row("one layer", n, on_disk, "frames" if frames else "statistics",
                             *measured(args.folder, args.width, None, n, None, frames)))  # fmt: skip
    if args.layered:
        n = args.layered
        on_disk = write(store, SyntheticEncoder(args.width, LAYERS, n), manifest(n), settings)
        for frames, load in ((True, f"layer 6 of {LAYERS}"), (False, f"layer 6 of {LAYERS}, statistics")):
            rows.append(_row(f"{LAYERS} layers", n, on_disk, load, *measured(args.folder, args.width, LAYERS, n, 6, frames)))
    table = pd.DataFrame(rows)
    print(f"python {' '.join(sys.argv)}; width {args.width}, float16 frames, 2 to 10 s at {FRAME_RATE} frames a second")
    print(table.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    print(json.dumps({"allocated_over_held": (table["allocated_gb"] / table["held_gb"]).round(2).tolist()}))


def _row(entry: str, n: int, on_disk: int, load: str, allocated: int, resident: int, held: int) -> dict:
    gb = 2**30
    return {"entry": entry, "utterances": n, "on_disk_gb": on_disk / gb, "load": load, "held_gb": held / gb,
            "allocated_gb": allocated / gb, "resident_gb": resident / gb}  # fmt: skip


if __name__ == "__main__":
    main()
