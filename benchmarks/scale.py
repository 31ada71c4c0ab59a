"""What loading a study's features costs in memory as the corpus grows: frames, statistics alone, one layer.

    python benchmarks/scale.py [--sizes 1000,10000] [--layered 1000] [--width 768] [--folder /tmp/scale]
    python benchmarks/scale.py --sizes "" --layered 0 --extraction 500,5000
    python benchmarks/scale.py --sizes "" --layered 0 --studies 1000,10000,100000
    python benchmarks/scale.py --sizes "" --layered 0 --weighted 10000 --heads mean_pool,mlp_pool
    python benchmarks/scale.py --sizes "" --layered 0 --studies 10000 --one-layer 10000

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

``--extraction N1,N2`` measures extraction as the corpus grows instead: it
writes N synthetic utterances (16 kHz noise of 1 to 4 s) and a tiny random
wav2vec 2.0, then in a fresh child process per size extracts them into an
empty store as ``budget extract`` does, and prints utterances and audio
seconds per second, the peak resident memory the extraction added, the shards
it wrote and how much its anonymous memory grew from the tenth shard's commit
to the last's.  Memory
that stays flat from N1 to N2 is constant in the corpus; seconds of audio per
second that stay flat are time linear in audio.

``--studies N1,N2,...`` runs a small study of each of ``--heads`` (2 sizes x
3 folds x 1 seed, the same sizes at every N) on a synthetic store of N
utterances, each in a fresh child process loading the store as a study does
(a head that reads frames: its frames left in the store's files), and prints
per head and N the peak resident memory the load and the study added (with the
store's pages its maps read) and the peak anonymous memory (what it allocated),
the seconds per run (the results' ``train_seconds``), of which fitting, the
held-out fold (which grows with N) and, apart, the seconds spent once per
feature set preparing what a frame head reads (a pass over every frame), and
the ratios to the smallest N.  Heads that pool first never read a frame, so
their stores hold two frames an utterance (to spare the disk: a
100,000-utterance store of 2 to 10 s takes 44 GB).

``--pooled-fits N1,N2`` times the runs of each pooled head of ``--heads``
on statistics tables of N1 and N2 utterances in one process, the N taking
turns: the same subset sizes, the same 200 held-out utterances a run, the
median of 7 passes; milliseconds fits measured apart from a study's fixed
costs and from a second process's share of the machine; every run in one
call as a study chunks them, and one run a call (nothing shared).

``--weighted N`` runs the same small study of each head of ``--heads`` that
can learn a weighted sum of layers (mean_pool, mlp_pool) on the 13-layer
``:all`` entry of N utterances, as ``:weighted`` (every layer of a frame side
by side, frames left in the store): 57 GB on disk at 10,000 utterances.
``--one-layer N`` runs it for every head of ``--heads`` on layer 6 of that
entry instead, to set beside ``--studies N`` on a one-layer entry.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import sys
import tracemalloc
from contextlib import contextmanager
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
    """Stands for an encoder whose features were stored: it is never run, only named.  ``frames``: how many an
    utterance holds (None: 2 to 10 s at 50 a second)."""

    frame_rate = float(FRAME_RATE)

    def __init__(self, width: int, layers: int | None, utterances: int, frames: int | None = None):
        short = "" if frames is None else f"-{frames}frames"
        super().__init__(f"synthetic{width}-{utterances}{short}" + (":all" if layers else ""))
        self.width, self.layers, self.utterances, self.frames = width, layers, utterances, frames

    def identity(self):
        return {"kind": "synthetic", "width": self.width, "layers": self.layers, "utterances": self.utterances,
                "frames": self.frames}  # fmt: skip

    def layer_names(self):
        return [f"layer{k}" for k in range(self.layers)] if self.layers else None

    def _extract(self, inputs):
        raise RuntimeError("synthetic features are written, not extracted")


CLASSES = ["neutral", "happy", "sad", "angry"]


def manifest(n: int, groups: int = 5) -> pd.DataFrame:
    """``n`` utterances of files that do not exist, four classes, ``groups`` groups."""
    ids = [f"u{i:06d}" for i in range(n)]
    return pd.DataFrame({"utt_id": ids, "path": [f"/nonexistent/{u}.wav" for u in ids], "text": "",
                         "label": np.array(CLASSES)[np.arange(n) % 4],
                         "group": [f"g{i % groups}" for i in range(n)], "speaker": [f"s{i % 10}" for i in range(n)]})  # fmt: skip


def write(store: FeatureStore, encoder: SyntheticEncoder, table: pd.DataFrame, settings: EntrySettings) -> int:
    """Write the entry (unless there) and return its size on disk in bytes."""
    entry = settings.entry(store.root, encoder)
    if not entry.described():
        rng = np.random.default_rng(0)
        keys = settings.utterance_keys(encoder, table)
        shape = (LAYERS, encoder.width) if encoder.layers else (encoder.width,)
        with entry.lock():
            FeatureStore._describe(entry, encoder, settings.identity(encoder), shape)
            per_shard = max(1, SHARD_UTTERANCES // (LAYERS if encoder.layers else 1))  # a shard's float32 copies fit
            for start in range(0, len(table), per_shard):
                rows = slice(start, start + per_shard)
                lengths = rng.integers(2 * FRAME_RATE, 10 * FRAME_RATE + 1, len(table[rows]))
                if encoder.frames is not None:
                    lengths = np.full(len(lengths), encoder.frames)
                labels = table["label"][rows].map({c: i for i, c in enumerate(CLASSES)}).to_numpy()
                # each class shifts its utterances a little, so a head has something to learn
                outputs = [rng.standard_normal((n, *shape), dtype=np.float32) + 0.05 * label for n, label in zip(lengths, labels, strict=True)]
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


def audio_corpus(folder: Path, n: int) -> pd.DataFrame:
    """``n`` wav files of 16 kHz noise, 1 to 4 s, in ``folder`` (kept), as a manifest."""
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(n)
    table = manifest(n)
    paths = []
    for utt_id in table["utt_id"]:
        path = folder / f"{utt_id}.wav"
        if not path.is_file():
            sf.write(path, 0.1 * rng.standard_normal(int(rng.uniform(1, 4) * 16000)).astype(np.float32), 16000)
        paths.append(str(path))
    return table.assign(path=paths)


def tiny_wav2vec2(folder: Path) -> Path:
    """A randomly initialised wav2vec 2.0 of three 32-wide layers, saved in transformers' layout (kept)."""
    if not (folder / "config.json").is_file():
        import torch
        from transformers import Wav2Vec2Config, Wav2Vec2Model

        config = Wav2Vec2Config(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=48,
                                conv_dim=(16, 16, 16), conv_stride=(5, 4, 2), conv_kernel=(10, 4, 2),
                                num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, vocab_size=12)  # fmt: skip
        torch.manual_seed(0)
        Wav2Vec2Model(config).eval().save_pretrained(folder)
    return folder


def _extract(model: str, corpus: str, n: int, store: str, answer) -> None:
    import time

    from budget.features import parse_feature_spec
    from budget.features.entries import Entry

    table = audio_corpus(Path(corpus), n)
    extractor = parse_feature_spec(f"hf:{model}")
    committed, original = [], Entry.write_shard

    def write_shard(entry, keys, *args, **kwargs):  # anonymous memory as each shard is committed
        original(entry, keys, *args, **kwargs)
        committed.append(AnonymousPeak.now())

    Entry.write_shard = write_shard
    _reset_peak()
    before = _resident_bytes()
    started = time.perf_counter()
    report = FeatureStore(store).extract(extractor, table)
    seconds = time.perf_counter() - started
    audio = sum(Path(path).stat().st_size - 44 for path in table["path"]) / 2 / 16000  # 16-bit PCM after the header
    tenth = committed[len(committed) // 10]
    answer.send((report.extracted, seconds, audio, _peak_bytes() - before, len(committed), committed[-1] - tenth))


def extraction(folder: Path, sizes: list[int]) -> pd.DataFrame:
    """Per corpus size, a fresh process extracting every utterance into an empty store: rates and peak memory."""
    import shutil

    model = tiny_wav2vec2(folder / "tiny-wav2vec2")
    rows = []
    for n in sizes:
        corpus, store = folder / f"audio-{n}", folder / f"extracted-{n}"
        audio_corpus(corpus, n)  # written before the timing
        shutil.rmtree(store, ignore_errors=True)
        receive, send = multiprocessing.Pipe(duplex=False)
        child = multiprocessing.get_context("spawn").Process(target=_extract, args=(str(model), str(corpus), n, str(store), send))
        child.start()
        extracted, seconds, audio, peak, shards, growth = receive.recv()
        child.join()
        rows.append({"utterances": n, "extracted": extracted, "audio_hours": audio / 3600, "seconds": seconds,
                     "utterances_per_s": extracted / seconds, "audio_s_per_s": audio / seconds,
                     "peak_resident_gb": peak / 2**30, "shards": shards, "anonymous_growth_mb": growth / 2**20})  # fmt: skip
    return pd.DataFrame(rows)


POOLED_HEADS = ("logreg", "mean_pool", "meanmax_pool")
STUDY_SIZES = (25, 100)  # per class, at every N (N = 1,000 holds 166 a class in a fold's training folds)
STUDY_FOLDS = 3


FRAME_HEADS = ("attn_pool", "mlp_pool")


class AnonymousPeak:
    """The peak of this process's anonymous resident memory (RssAnon: what it allocated, not the store's file pages
    its memory maps read, which the kernel drops under pressure), sampled every ``interval`` seconds."""

    def __init__(self, interval: float = 0.02):
        import threading

        self.interval, self.start = interval, self.now()
        self.peak, self._stop = self.start, threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    @staticmethod
    def now() -> int:
        status = Path("/proc/self/status").read_text()
        return int(next(line for line in status.splitlines() if line.startswith("RssAnon:")).split()[1]) * 1024

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self.now())

    def stop(self) -> int:
        """The peak added since it started."""
        self._stop.set()
        self._thread.join()
        return max(self.peak, self.now()) - self.start


def _study(root: str, width: int, n: int, head: str, folder: str, answer, layers: int | None = None,
           layer: int | None = None) -> None:  # fmt: skip
    """Load the store as a study does (a head that reads frames: frames left in the store) and run one head's small
    study; send its peak resident and anonymous memory added and the seconds per run, fitting and predicting.
    ``layers``: on the ``:all`` entry of that many layers, as a weighted sum of them (``:weighted``), or its
    ``layer`` alone."""
    from budget.engine.config import TrainConfig
    from budget.folds import assign_folds, fold_names
    from budget.registry import head_spec
    from budget.sampling import Size, plan_sizes
    from budget.study import Study, StudyConfig
    from budget.study.run import StudyData, StudyInputs, stacked_layers

    reads = head_spec(head).reads_frames
    table = manifest(n, groups=STUDY_FOLDS)
    encoder = SyntheticEncoder(width, layers, n, frames=None if reads or layers else 2)
    _reset_peak()
    before, anonymous = _resident_bytes(), AnonymousPeak()
    features = FeatureStore(root).load(encoder, table, EntrySettings(), layer=layer, frames=reads, mapped=reads)
    if layers and layer is None:
        features = stacked_layers(features)
    folds = assign_folds(table, n_folds=STUDY_FOLDS)
    sizes = [Size(k) for k in STUDY_SIZES]
    data = StudyData(table, CLASSES, folds, fold_names(table, folds), plan_sizes(sizes, table, folds),
                     pd.DataFrame(), pd.DataFrame())  # fmt: skip
    config = StudyConfig(corpus="csv", features=("synthetic",), heads=(head,), per_class=sizes, seeds=1,
                         train=TrainConfig(device="cpu"))  # fmt: skip
    inputs = StudyInputs(data, {"synthetic": features}, {"synthetic": encoder.spec}, [])
    with fits_timed() as (fitting, predicting, preparing):
        results = Study(config, folder).run_inputs(inputs, log=lambda _: None)
    runs, per_run = len(results), results["train_seconds"].mean()
    fit = per_run - (predicting[0] + preparing[0]) / runs if reads else fitting[0] / runs
    held_out = predicting[0] / runs if reads else per_run - fit
    answer.send((_peak_bytes() - before, anonymous.stop(), per_run, fit, held_out, preparing[0]))


@contextmanager
def fits_timed():
    """Within it, the seconds spent in training fitting the runs of heads that pool first (scikit-learn's pipeline
    fit, the toolkit's full-batch L-BFGS; not the cost model's probes), predicting the held-out fold of frame heads,
    and preparing what frame heads read (centred frames, segment means: once per feature set, a pass over every
    frame) add up in the three lists it yields: what a run's ``train_seconds`` holds besides, for each."""
    import time

    from sklearn.pipeline import Pipeline

    from budget.engine import adam, lbfgs, runs
    from budget.execute import LocalExecutor

    fitting, predicting, preparing, training = [0.0], [0.0], [0.0], [False]
    originals = (Pipeline.fit, lbfgs.fit_full_batch, LocalExecutor.train_chunks, adam._test_logits, lbfgs.attention_logits,
                 runs.prepared_inputs)  # fmt: skip

    def timed(function, spent):
        def call(*args, **kwargs):
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                spent[0] += (time.perf_counter() - started) if training[0] else 0.0

        return call

    def train_chunks(*args, **kwargs):
        training[0] = True
        try:
            return originals[2](*args, **kwargs)
        finally:
            training[0] = False

    Pipeline.fit, lbfgs.fit_full_batch = timed(originals[0], fitting), timed(originals[1], fitting)
    adam._test_logits, lbfgs.attention_logits = timed(originals[3], predicting), timed(originals[4], predicting)
    LocalExecutor.train_chunks, runs.prepared_inputs = train_chunks, timed(originals[5], preparing)
    try:
        yield fitting, predicting, preparing
    finally:
        (Pipeline.fit, lbfgs.fit_full_batch, LocalExecutor.train_chunks, adam._test_logits, lbfgs.attention_logits,
         runs.prepared_inputs) = originals  # fmt: skip


def studies(folder: Path, sizes: list[int], width: int, heads: tuple[str, ...], layers: int | None = None,
            layer: int | None = None) -> pd.DataFrame:  # fmt: skip
    """Per N and head, a fresh process's small study: peak memory and seconds per run; with ``layers``, on an
    ``:all`` entry of that many, as their weighted sum (the heads that can learn one), or its ``layer``."""
    import shutil

    from budget.registry import head_spec

    store, settings, rows = FeatureStore(folder), EntrySettings(), []
    for n in sizes:
        for head in (h for h in heads if not layers or layer is not None or head_spec(h).mixes_layers):
            frames = None if head_spec(head).reads_frames or layers else 2
            on_disk = write(store, SyntheticEncoder(width, layers, n, frames=frames), manifest(n, groups=STUDY_FOLDS), settings)
            kind = "" if not layers else "-weighted" if layer is None else f"-layer{layer}"
            run = folder / f"study-{head}-{n}{kind}"
            shutil.rmtree(run, ignore_errors=True)
            receive, send = multiprocessing.Pipe(duplex=False)
            child = multiprocessing.get_context("spawn").Process(target=_study, args=(str(folder), width, n, head, str(run), send, layers, layer))
            child.start()
            peak, anonymous, per_run, fit, held_out, prepared = receive.recv()
            child.join()
            which = "" if not layers else f" ({layers} layers weighted)" if layer is None else f" (layer {layer} of {layers})"
            rows.append({"head": head + which, "utterances": n, "store_gb": on_disk / 2**30, "peak_resident_gb": peak / 2**30,
                         "peak_anonymous_gb": anonymous / 2**30, "s_per_run": per_run, "fit_s_per_run": fit,
                         "held_out_s_per_run": held_out, "prepared_s": prepared})  # fmt: skip
            print(", ".join(f"{key} {value:.3f}" if isinstance(value, float) else f"{key} {value}"
                            for key, value in rows[-1].items()), flush=True)  # a study killed later leaves this one's figures
    table = pd.DataFrame(rows)
    for column in ("s_per_run", "fit_s_per_run"):
        table[f"{column}_vs_first"] = table[column] / table.groupby("head")[column].transform("first")
    return table


def pooled_fits(sizes: list[int], width: int, heads: tuple[str, ...], repeats: int = 7, seeds: int = 3) -> pd.DataFrame:
    """Per head that pools first, the median seconds a run takes on statistics tables of each N in this one process
    (the N taking turns, ``repeats`` times): the runs of every N train on the same subset sizes and predict the
    same 200 held-out utterances, so only the table they are drawn from grows.  ``together``: every run in one
    call, as a study's chunk (a fitted chunk reads the union of its runs' rows once for all of them, which on a
    small corpus is far fewer than theirs added up); ``alone``: one run a call, with nothing shared."""
    import time

    import torch
    from training import runs_for

    from budget.engine.config import TrainConfig
    from budget.engine.packed import DeviceFeatures
    from budget.engine.runs import train_runs
    from budget.features.featureset import FeatureSet
    from budget.grid import Run
    from budget.heads import HEADS
    from budget.registry import head_spec

    config, rng = TrainConfig(device="cpu"), np.random.default_rng(0)
    tables = {}
    for n in sizes:
        labels = np.arange(n) % 4
        mean = (rng.standard_normal((n, width), dtype=np.float32) + 0.05 * labels[:, None]).astype(np.float32)
        features = FeatureSet(f"synthetic{width}-{n}", np.array([f"u{i}" for i in range(n)]), np.ones(n, np.int64),
                              np.arange(n), None, mean, mean + 1)  # fmt: skip
        runs = [Run(r.fold, r.seed, r.size, r.train, r.test[:200])
                for r in runs_for(labels, np.arange(n) % STUDY_FOLDS, STUDY_SIZES, seeds)]  # fmt: skip
        tables[n] = (features, DeviceFeatures.upload(features, torch.device("cpu")), labels, runs)
    timings = {(head, n, fit): [] for head in heads for n in sizes for fit in ("together", "alone")}
    for _ in range(repeats):
        for head in heads:
            for n, (features, uploaded, labels, runs) in tables.items():
                for fit, groups in (("together", [runs]), ("alone", [[run] for run in runs])):
                    started = time.perf_counter()
                    for group in groups:
                        if head_spec(head).uploads:
                            train_runs(HEADS[head], features, labels, group, 4, config, uploaded=uploaded)
                        else:
                            head_spec(head).train({"single": features}, labels, group, 4, config)
                    timings[head, n, fit].append((time.perf_counter() - started) / len(runs))
    table = pd.DataFrame([{"head": head, "fit": fit, "utterances": n, "s_per_run": float(np.median(times)),
                           "spread": float(np.subtract(*np.percentile(times, [75, 25])) / np.median(times))}
                          for (head, n, fit), times in timings.items()])  # fmt: skip
    table["s_per_run_vs_first"] = table["s_per_run"] / table.groupby(["head", "fit"])["s_per_run"].transform("first")
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,10000", help="utterances of each one-layer store")
    parser.add_argument("--layered", type=int, default=1000, help="utterances of the 13-layer :all store (0: none)")
    parser.add_argument("--width", type=int, default=768)
    parser.add_argument("--folder", type=Path, default=Path("/tmp/budget-scale"))
    parser.add_argument("--extraction", default="", help="utterances of each synthetic audio corpus to extract")
    parser.add_argument("--studies", default="", help="utterances of each store a small study of each head runs on")
    parser.add_argument("--heads", default=",".join(POOLED_HEADS + FRAME_HEADS), help="the heads of --studies")
    parser.add_argument("--weighted", type=int, default=0,
                        help="utterances of a 13-layer :all store each head that can learns a weighted sum on (0: none)")
    parser.add_argument("--one-layer", type=int, default=0,
                        help="utterances of a 13-layer :all store each head of --heads studies layer 6 of (0: none)")
    parser.add_argument("--pooled-fits", default="", help="utterances of each statistics table the pooled heads' runs "
                        "are timed on in one process")
    args = parser.parse_args(argv)
    if args.pooled_fits:
        heads = tuple(h for h in args.heads.split(",") if h in POOLED_HEADS)
        table = pooled_fits([int(n) for n in args.pooled_fits.split(",")], args.width, heads)
        print(f"python {' '.join(sys.argv)}; width {args.width}; sizes {STUDY_SIZES} per class x {STUDY_FOLDS} folds x "
              f"3 seeds, 200 held-out utterances a run; median of 7, spread the interquartile range over it; a "
              "chunk's runs fitted together or alone")
        print(table.to_string(index=False, float_format=lambda x: f"{x:.4f}"))
    for sizes, layers, layer in ((args.studies, None, None), (str(args.weighted) if args.weighted else "", LAYERS, None),
                                 (str(args.one_layer) if args.one_layer else "", LAYERS, 6)):  # fmt: skip
        if not sizes:
            continue
        table = studies(args.folder, [int(n) for n in sizes.split(",")], args.width, tuple(args.heads.split(",")), layers,
                        layer)  # fmt: skip
        print(f"python {' '.join(sys.argv)}; width {args.width}; {STUDY_FOLDS} folds, sizes {STUDY_SIZES} per class, 1 seed")
        print(table.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    if args.extraction:
        table = extraction(args.folder, [int(n) for n in args.extraction.split(",")])
        print(f"python {' '.join(sys.argv)}; a tiny random wav2vec 2.0 (3 layers, 32 wide) over 1 to 4 s of noise")
        print(table.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    sizes = [int(s) for s in args.sizes.split(",") if s]
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
    if not rows:
        return
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
