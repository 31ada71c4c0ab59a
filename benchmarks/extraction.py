"""Benchmark feature extraction on EmoDB: the store's batched pipeline against a naive loop.

    python benchmarks/extraction.py --emodb ../shared/data/emodb --whisper ../shared/models/whisper-tiny-en

For ``lld`` and the Whisper tiny.en encoder it measures, on the whole corpus:
utterances per second and real-time factor of ``FeatureStore.extract`` (batches
of similar length, fp32) against a naive loop that loads each file and calls
the model once per utterance in fp32; the time to load every utterance's
features back from the store; the store's size on disk.  It then extracts a
subset in bf16 and reports how far those features are from fp32.  Figures are
printed with a description of the machine.

``--synthetic N`` instead fills a store with N utterances of random frames shaped
like a base-size encoder's (``--dim`` wide, 50 frames/s, IEMOCAP's mean of 4.5 s)
and times loading them all back, the cost a study pays before training.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from machine import describe_machine

from budget.audio import load_audio
from budget.corpora import load_corpus
from budget.features import FeatureExtractor, FeatureStore, parse_feature_spec


def naive_loop(spec: str, paths: list[str]) -> float:
    """Seconds to extract every file one at a time, fp32, no batching, no store."""
    extractor = parse_feature_spec(spec).configure("cpu", "fp32")
    extractor.extract([load_audio(paths[0])])  # load the model outside the timing, as the store run does
    started = time.perf_counter()
    for path in paths:
        extractor.extract([load_audio(path)])
    return time.perf_counter() - started


class RandomFrames(FeatureExtractor):
    """Random float frames, 4.5 s at 50 frames/s on average, keyed by a dummy transcript."""

    modality = "text"

    def __init__(self, dim: int):
        super().__init__(f"random-{dim}")
        self.dim = dim

    def identity(self):
        return {"kind": "random", "dim": self.dim}

    def _extract(self, inputs):
        outputs = []
        for text in inputs:
            rng = np.random.default_rng(int(text))
            outputs.append(rng.standard_normal((int(rng.integers(100, 351)), self.dim), dtype=np.float32))
        return outputs


def synthetic_load(n: int, dim: int) -> None:
    manifest = pd.DataFrame({"utt_id": [f"u{i}" for i in range(n)], "path": "", "text": [str(i) for i in range(n)]})
    extractor = RandomFrames(dim)
    with tempfile.TemporaryDirectory() as folder:
        store = FeatureStore(folder)
        report = store.extract(extractor, manifest, batch_size=64)
        started = time.perf_counter()
        features = store.load(extractor, manifest)
        seconds = time.perf_counter() - started
        print(
            f"synthetic store: {n} utterances, {features.frames.shape[0]} frames x {dim} float16, "
            f"{directory_mb(report.entry):.0f} MB on disk; written in {report.seconds:.1f} s; "
            f"all loaded in {seconds:.2f} s (cold page cache not forced)"
        )


def directory_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--emodb", help="EmoDB root (holding wav/)")
    parser.add_argument("--whisper", help="whisper tiny.en folder in transformers layout")
    parser.add_argument("--synthetic", type=int, help="only time loading N synthetic utterances")
    parser.add_argument("--dim", type=int, default=768, help="frame width for --synthetic")
    parser.add_argument("--bf16-subset", type=int, default=48, help="utterances for the bf16 comparison")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    print(f"machine: {describe_machine()}")
    if args.synthetic:
        synthetic_load(args.synthetic, args.dim)
        return
    if not (args.emodb and args.whisper):
        parser.error("--emodb and --whisper are required (or --synthetic N)")

    manifest = load_corpus("emodb", args.emodb)
    audio_seconds = sum(len(load_audio(p)) for p in manifest["path"]) / 16_000
    print(f"corpus: EmoDB, {len(manifest)} utterances, {audio_seconds:.0f} s of audio after the 5 s crop")
    with tempfile.TemporaryDirectory() as folder:
        store = FeatureStore(folder)
        for spec in ("lld", f"hf:{args.whisper}"):
            extractor = parse_feature_spec(spec).configure(args.device, "fp32")
            extractor.extract([load_audio(manifest["path"].iloc[0])])  # model load outside the timing
            report = store.extract(extractor, manifest)
            naive = naive_loop(spec, list(manifest["path"]))
            started = time.perf_counter()
            features = store.load(extractor, manifest)
            load_seconds = time.perf_counter() - started
            print(
                f"{spec}: store {report.utterances_per_second:.1f} utt/s (RTF {report.real_time_factor:.4f}) "
                f"vs naive loop {len(manifest) / naive:.1f} utt/s (RTF {naive / audio_seconds:.4f}); "
                f"speed-up x{naive / report.seconds:.2f}; load all {len(features)} utterances "
                f"({features.frames.shape[0]} frames x {features.dim}) in {load_seconds:.2f} s; "
                f"{directory_mb(report.entry):.1f} MB on disk; {len(report.failures)} failures"
            )
        subset = manifest.iloc[: args.bf16_subset]
        fp32 = parse_feature_spec(f"hf:{args.whisper}").configure(args.device, "fp32")
        bf16 = parse_feature_spec(f"hf:{args.whisper}").configure(args.device, "bf16")
        timing = {}
        for extractor in (fp32, bf16):
            extractor.extract([load_audio(subset["path"].iloc[0])])
            timing[extractor.precision] = store.extract(extractor, subset, frame_dtype="float32").seconds
        a = store.load(fp32, subset, frame_dtype="float32").frames
        b = store.load(bf16, subset, frame_dtype="float32").frames
        cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        relative = np.linalg.norm(a - b, axis=1) / np.linalg.norm(a, axis=1)
        print(
            f"whisper bf16 vs fp32 on {len(subset)} utterances: {timing['bf16']:.1f} s vs {timing['fp32']:.1f} s; "
            f"per-frame relative L2 error mean {relative.mean():.4f} (max {relative.max():.4f}), "
            f"cosine similarity mean {cosine.mean():.5f} (min {cosine.min():.5f}), max |diff| {np.abs(a - b).max():.3f}"
        )


if __name__ == "__main__":
    main()
