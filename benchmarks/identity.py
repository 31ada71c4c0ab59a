"""What knowing audio files by their content costs a study, against knowing them by path, size and date.

    python benchmarks/identity.py --emodb ../shared/data/emodb
    python benchmarks/identity.py --synthetic-hours 7 --files 5531   # a corpus of IEMOCAP's size

Every study computes one key per utterance to find its features in the store:
``stat`` hashes the path, size and modification time; ``content`` hashes the
file's bytes.  The benchmark times both on the same manifest, warm (files in
the page cache, as on a second study) and, with ``--cold`` (root on Linux),
after dropping the page cache, as on the first study after a reboot.  It also
times the header scan every study already does, as a yardstick of fixed costs.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
from machine import describe_machine

from budget.audio import SAMPLE_RATE, scan_audio
from budget.corpora import load_corpus
from budget.features import parse_feature_spec
from budget.features.entries import EntrySettings


def synthetic_corpus(folder: Path, hours: float, files: int, seed: int = 0) -> pd.DataFrame:
    """``files`` 16 kHz 16-bit wavs of noise, ``hours`` in all (lengths spread around their mean)."""
    rng = np.random.default_rng(seed)
    seconds = rng.uniform(0.5, 1.5, files)
    seconds *= hours * 3600 / seconds.sum()
    rows = []
    for i, duration in enumerate(seconds):
        path = folder / f"utt{i:05d}.wav"
        samples = (rng.standard_normal(int(duration * SAMPLE_RATE)) * 3000).astype(np.int16)
        sf.write(path, samples, SAMPLE_RATE, subtype="PCM_16")
        rows.append({"utt_id": path.stem, "path": str(path), "label": "neutral", "group": str(i % 10), "text": ""})
    return pd.DataFrame(rows)


def drop_page_cache() -> bool:
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        return False
    return True


def timed(work) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--emodb", type=Path, help="the EmoDB folder")
    parser.add_argument("--synthetic-hours", type=float, help="build a corpus of this many hours instead")
    parser.add_argument("--files", type=int, default=5531, help="files of the synthetic corpus (IEMOCAP: 5531)")
    parser.add_argument("--cold", action="store_true", help="also time after dropping the page cache (root)")
    parser.add_argument("--repeats", type=int, default=3, help="warm timings; the least is reported")
    args = parser.parse_args()
    if (args.emodb is None) == (args.synthetic_hours is None):
        parser.error("give --emodb or --synthetic-hours")
    print(describe_machine())
    with tempfile.TemporaryDirectory() as scratch:
        if args.emodb is not None:
            manifest, name = load_corpus("emodb", args.emodb), "EmoDB"
        else:
            manifest = synthetic_corpus(Path(scratch), args.synthetic_hours, args.files)
            name = f"synthetic {args.synthetic_hours:g} h"
        size = sum(Path(p).stat().st_size for p in manifest["path"])
        print(f"{name}: {len(manifest)} files, {size / 1e6:.0f} MB")
        extractor = parse_feature_spec("lld")
        work = {
            "header scan (every study)": lambda: scan_audio(manifest),
            "stat keys": lambda: EntrySettings(file_identity="stat").utterance_keys(extractor, manifest),
            "content keys": lambda: EntrySettings(file_identity="content").utterance_keys(extractor, manifest),
        }
        for what, call in work.items():
            warm = min(timed(call) for _ in range(args.repeats))
            cold = f", cold {timed(call):.2f} s" if args.cold and drop_page_cache() else ""
            print(f"  {what}: warm {warm:.3f} s{cold}")


if __name__ == "__main__":
    main()
