"""Benchmark the training engine: cost per run at each size, against logistic regression and the hardware floor.

    python benchmarks/training.py --emodb ../shared/data/emodb --whisper ../shared/models/whisper-tiny-en [--before]
    python benchmarks/training.py --synthetic iemocap|ravdess [--device cuda] [--scale 1.0]

``--emodb``: EmoDB's four IEMOCAP classes, every leave-one-speaker-out fold,
``--seeds`` seeds, at each of ``--per-class`` (default 6, 13, 26, 52 per
class and full), on LLDs and Whisper tiny.en features from the feature store
(``budget extract`` first).  ``--synthetic iemocap``: random features of
IEMOCAP's shape (5,531 utterances in 5 sessions, class counts 1,708 / 1,636 /
1,103 / 1,084, 1024-d frames at 100 per second like wav2vec large, 5 s crop)
and the paper's Figure 2 grid (125, 250, 500 per class and full x 5 folds x
5 seeds) for the four heads; ``--synthetic ravdess``: RAVDESS's four classes
(672 utterances of 3.7 s in 6 folds, Whisper tiny.en's 384-d frames at 50 per
second) at 5 to 80 per class; ``--scale`` shrinks the corpus for a quick run.

Per head and size it prints, all measured in this process on this device:
seconds per run (every run of the size trained as the study would train it),
that cost as a multiple of scikit-learn's logistic regression on the same
runs, mean UA, and peak memory (RSS on CPU, ``torch.cuda.max_memory_allocated``
on GPU).  For stepped heads, at the largest size: the floor (the device's
matrix-product throughput on the head's own shapes) and the share of it the
training achieved, and runs per second one at a time (``--alone``).
``--before`` trains every cell again under :data:`BEFORE`, the settings that
give the engine as it was before the trained heads were made cheaper (every
frame of 2000 steps for every mlp_pool run, attention fitted from zero to
scikit-learn's tolerance / 10), and prints the speed-up and the paired UA
change with its standard error over the runs.
"""

from __future__ import annotations

import argparse
import math
import resource
import time
from dataclasses import dataclass, replace

import numpy as np
import torch

from budget.engine.config import TrainConfig, solved
from budget.engine.cost import head_cost
from budget.engine.device import training_device, uses_autocast, warm_up
from budget.engine.packed import DeviceFeatures
from budget.engine.runs import train_runs
from budget.grid import Run
from budget.heads import HEADS, mlp_shape
from budget.metrics import run_metrics
from budget.registry import LOGREG, describe_training, head_spec
from budget.sampling import FULL, balanced_subset, read_sizes

IEMOCAP_CLASSES = {"neutral": 1708, "happy": 1636, "angry": 1103, "sad": 1084}
IEMOCAP_SESSIONS = (1085, 1023, 1151, 1031, 1241)


@dataclass
class Grid:
    name: str
    features: DeviceFeatures
    labels: np.ndarray
    runs: list[Run]
    n_classes: int
    host: object = None  # the FeatureSet, where there is one (logreg needs it)


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def floor_flops(device: torch.device, members: int, rows: int, inner: int, outer: int, autocast: bool) -> float:
    """FLOP/s of one batched product of the head's own shapes, forward: the floor's rate.

    The best of several rounds: a busy moment on a shared machine slows a
    round, and a floor read low would flatter the achieved share.
    """
    dtype = torch.bfloat16 if autocast else torch.float32
    a = torch.randn(members, rows, inner, device=device, dtype=dtype)
    b = torch.randn(members, inner, outer, device=device, dtype=dtype)
    for _ in range(3):
        torch.bmm(a, b)
    repeats = 20 if device.type == "cuda" else 3
    best = float("inf")
    for _ in range(7):
        synchronise(device)
        started = time.perf_counter()
        for _ in range(repeats):
            torch.bmm(a, b)
        synchronise(device)
        best = min(best, time.perf_counter() - started)
    return 2 * members * rows * inner * outer * repeats / best


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


#: The settings that give the engine as it was before the trained heads were made cheaper (commit 5d863df): 2000
#: steps for every mlp_pool run over every frame, attention fitted from a zero start, L-BFGS to a tenth of
#: scikit-learn's tolerance.  (Attention is now fitted run by run either way: the same objective, alone.)
BEFORE = {"steps": 2000, "max_epochs": 0, "train_frames": 0, "attention_start": "zero", "lbfgs_tolerance": 1e-5}


def train_cell(grid: Grid, head: str, runs: list[Run], config: TrainConfig) -> dict:
    """Every run of one size trained as a study trains them: seconds per run, each run's UA, peak memory."""
    device = training_device(config)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    fitted = not head_spec(head).uploads or solved(HEADS[head], config)
    seconds = math.inf
    for _ in range(2 if fitted else 1):  # fitted heads take milliseconds: timed warm, the best of two
        synchronise(device)
        started = time.perf_counter()
        if head_spec(head).uploads:
            predictions = train_runs(HEADS[head], grid.host, grid.labels, runs, grid.n_classes, config, uploaded=grid.features)
        else:  # the reference, solved by scikit-learn one run at a time
            predictions = head_spec(head).train({"single": grid.host}, grid.labels, runs, grid.n_classes, config)
        synchronise(device)
        seconds = min(seconds, (time.perf_counter() - started) / len(runs))
    return {"seconds": seconds, "ua": _uas(grid, runs, predictions), "peak_mb": peak_memory_mb(device)}


def floor_share(grid: Grid, head: str, runs: list[Run], config: TrainConfig, seconds: float) -> tuple[float, float]:
    """A stepped head's achieved FLOP/s over ``runs`` taking ``seconds`` a run, and the floor's on its shapes."""
    device = training_device(config)
    cost = head_cost(HEADS[head], grid.features, grid.n_classes, config)
    achieved = cost.flops_per_step(1, config.batch_size) * config.steps_for(len(runs[0].train)) / seconds
    autocast = uses_autocast(device, config)
    rows = int(config.batch_size * cost.rows_per_slot)
    members = min(len(runs), 8 if device.type == "cpu" else len(runs))
    shapes = head_shapes(head, grid.features.dim, grid.n_classes, rows, config.batch_size)
    floor_seconds = sum(2 * m * k * n / floor_flops(device, members, m, k, n, autocast) for m, k, n in shapes)
    return achieved, sum(2 * m * k * n for m, k, n in shapes) / floor_seconds


def alone_seconds(grid: Grid, head: str, runs: list[Run], config: TrainConfig, sample: int) -> float:
    """Seconds per run trained one at a time, over a sample of ``runs``."""
    device = training_device(config)
    chosen = runs[:: max(1, len(runs) // sample)][:sample]
    started = time.perf_counter()
    for run in chosen:
        train_runs(HEADS[head], grid.host, grid.labels, [run], grid.n_classes, config, uploaded=grid.features)
    synchronise(device)
    return (time.perf_counter() - started) / len(chosen)


def head_shapes(head: str, dim: int, n_classes: int, rows: int, slots: int) -> list[tuple[int, int, int]]:
    """The (rows, inner, outer) matrix products of one member's forward step: the floor is their time."""
    if head == "mlp_pool":
        depth, width = mlp_shape(dim)
        return [(rows, dim, width), *[(rows, width, width)] * (depth - 1), (slots, rows, width)]
    return [(rows, dim, 1), (slots, rows, dim), (slots, dim, n_classes)]  # attn_pool (epochs schedule): score, sum, classifier


def _uas(grid: Grid, runs: list[Run], predictions) -> np.ndarray:
    classes = [str(c) for c in range(grid.n_classes)]
    return np.array([run_metrics(grid.labels[r.test], p, classes)["ua"] for r, p in zip(runs, predictions, strict=True)])


def runs_for(labels: np.ndarray, folds: np.ndarray, sizes, seeds: int) -> list[Run]:
    runs = []
    for size in sizes:
        for fold in np.unique(folds):
            train, test = np.flatnonzero(folds != fold), np.flatnonzero(folds == fold)
            for seed in range(seeds):
                runs.append(Run(int(fold), seed, size, train[balanced_subset(labels[train], size, seed, int(fold))], test))
    return runs


def emodb_grids(args, device: torch.device) -> list[Grid]:
    from budget.corpora import load_corpus
    from budget.features import FeatureStore, parse_feature_spec
    from budget.folds import assign_folds

    manifest = load_corpus("emodb", args.emodb, classes="neutral,happy,sad,angry")
    folds = assign_folds(manifest).to_numpy()
    classes = ["neutral", "happy", "sad", "angry"]
    labels = manifest["label"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    store = FeatureStore(args.store)
    grids = []
    for spec in ("lld", f"hf:{args.whisper}"):
        features = store.load(parse_feature_spec(spec), manifest)
        if features.missing:
            raise SystemExit(f"extract {spec} first: budget extract --root {args.emodb} -f {spec}")
        uploaded = DeviceFeatures.upload(features, device)
        runs = runs_for(labels, folds, args.sizes, args.seeds)
        grids.append(Grid(spec.split("/")[-1], uploaded, labels, runs, 4, features))
    return grids


@dataclass(frozen=True)
class Shape:
    """A synthetic corpus: class counts, groups (folds), utterance seconds (mean, crop), frame rate, width, sizes."""

    name: str
    classes: tuple[int, ...]
    groups: tuple[int, ...]
    mean_seconds: float
    crop_seconds: float
    frame_rate: int
    width: int
    sizes: tuple[int, ...]


SHAPES = {
    # 1,024-d frames at 100 a second like wav2vec large, 5 s crop; the paper's Figure 2 sizes
    "iemocap": Shape("IEMOCAP", tuple(IEMOCAP_CLASSES.values()), IEMOCAP_SESSIONS, 4.5, 5.0, 100, 1024,
                     tuple(125 * 2**i for i in range(8))),  # fmt: skip
    # RAVDESS's four classes (672 utterances of 3.7 s), Whisper tiny.en's 384-d frames at 50 a second, 6 folds
    "ravdess": Shape("RAVDESS", (96, 192, 192, 192), (112,) * 6, 3.7, 5.0, 50, 384, (5, 10, 20, 40, 80)),
}


def synthetic_grid(shape: Shape, scale: float, device: torch.device, seeds: int, seed: int = 0) -> Grid:
    """Random frames of ``shape``; each class shifts the frames' mean a little, so heads can learn."""
    generator = torch.Generator(device=device).manual_seed(seed)
    rng = np.random.default_rng(seed)
    groups = np.concatenate([np.full(max(2, round(n * scale)), i) for i, n in enumerate(shape.groups)])
    counts = np.array(shape.classes, dtype=float)
    labels = np.concatenate([rng.permutation(_class_mix(counts, int((groups == g).sum()))) for g in np.unique(groups)])
    seconds = np.clip(rng.gamma(4.0, shape.mean_seconds / 4.0, len(groups)), 0.6, shape.crop_seconds)
    lengths = np.round(seconds * shape.frame_rate).astype(np.int64)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    width = shape.width
    centres = 0.005 * torch.randn(len(counts), width, generator=generator, device=device, dtype=dtype)
    frames = torch.randn(int(lengths.sum()), width, generator=generator, device=device, dtype=dtype)
    frames += centres[torch.from_numpy(np.repeat(labels, lengths)).to(device)]
    owner = torch.from_numpy(np.repeat(np.arange(len(lengths)), lengths)).to(device)
    sums = torch.zeros(len(lengths), width, device=device).index_add_(0, owner, frames.float())
    mean = sums / torch.from_numpy(lengths).to(device).unsqueeze(1)
    maximum = torch.full((len(lengths), width), -torch.inf, device=device).index_reduce_(0, owner, frames.float(), "amax")
    features = DeviceFeatures(frames, lengths, mean, maximum)
    ceiling = min(np.bincount(labels[groups != g], minlength=len(counts)).min() for g in np.unique(groups))
    sizes = [size for size in shape.sizes if size <= ceiling] or [max(1, int(ceiling) // 2)]
    runs = runs_for(labels, groups, [*sizes, FULL], seeds)
    host = _HostPooled(mean.cpu().numpy(), maximum.cpu().numpy())
    return Grid(f"synthetic {shape.name} x{scale:g} (sizes {sizes} + full)", features, labels, runs, len(counts), host)


def _class_mix(counts: np.ndarray, size: int) -> np.ndarray:
    """``size`` labels in the proportions of ``counts`` (largest remainders): every group holds the corpus's class
    mix, as RAVDESS's actors and IEMOCAP's sessions nearly do."""
    share = counts / counts.sum() * size
    taken = np.floor(share).astype(np.int64)
    taken[np.argsort(taken - share)[: size - int(taken.sum())]] += 1
    return np.repeat(np.arange(len(counts)), taken)


@dataclass
class _HostPooled:
    """What logistic regression reads of a synthetic feature set."""

    mean: np.ndarray
    max: np.ndarray


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--emodb")
    parser.add_argument("--whisper")
    parser.add_argument("--synthetic", choices=list(SHAPES))
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the synthetic corpus's utterances")
    parser.add_argument("--store", default=None, help="feature store (default: budget's)")
    parser.add_argument("--per-class", default="6,13,26,52,full", help="sizes on EmoDB")
    parser.add_argument("--seeds", type=int, default=None, help="default 1 on EmoDB, 5 synthetic")
    parser.add_argument("--steps", type=int, default=TrainConfig.steps)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--heads", default=None, help="comma-separated (default: all)")
    parser.add_argument("--alone", type=int, default=2, help="runs of a stepped head trained one at a time, at the largest size")
    parser.add_argument("--no-bf16", action="store_true", help="float32 products even where the device runs bf16 fast")
    parser.add_argument("--before", action="store_true", help="train every cell again as the engine before did, and compare")
    args = parser.parse_args()
    if not (args.synthetic or (args.emodb and args.whisper)):
        parser.error(f"give --emodb and --whisper, or --synthetic {'/'.join(SHAPES)}")

    from machine import describe_machine

    config = TrainConfig(steps=args.steps, device=args.device, bf16=not args.no_bf16)
    before = replace(config, **BEFORE)
    device = training_device(config)
    print(f"machine: {describe_machine()}; training on {device}")
    if args.synthetic:
        grids = [synthetic_grid(SHAPES[args.synthetic], args.scale, device, args.seeds or 5)]
        heads = args.heads.split(",") if args.heads else list(HEADS)
    else:
        args.seeds = args.seeds or 1
        args.sizes = read_sizes(args.per_class)
        grids = emodb_grids(args, device)
        heads = args.heads.split(",") if args.heads else [LOGREG, *HEADS]
    warm_up(device)
    print(f"budget: {describe_training(config, heads)}; frame heads in {'bf16 autocast' if uses_autocast(device, config) else 'float32'}")
    if args.before:
        print(f"before: {', '.join(f'{k} = {v}' for k, v in BEFORE.items())}")
    started = time.perf_counter()
    for grid in grids:
        sizes = list(dict.fromkeys(run.size for run in grid.runs))
        print(f"\n{grid.name}: {len(grid.runs) // len(sizes)} runs per head and size, {len(grid.features)} utterances, "
              f"{grid.features.dim}-d, mean {np.mean(grid.features.lengths):.0f} frames")  # fmt: skip
        header = f"{'head':<13}{'size':>6}{'s/run':>9}{'x logreg':>10}{'UA':>7}{'peak MB':>9}"
        if args.before:
            header += f"{'before s':>10}{'speed-up':>10}{'UA before':>11}{'change (pts)':>15}"
        print(header)
        logreg: dict = {}
        for head in heads:
            if head == LOGREG and grid.host is None:
                continue
            for size in sizes:
                runs = [run for run in grid.runs if run.size == size]
                now = train_cell(grid, head, runs, config)
                if head == LOGREG:
                    logreg[size] = now["seconds"]
                ratio = f"{now['seconds'] / logreg[size]:>10.1f}" if size in logreg else f"{'-':>10}"
                line = f"{head:<13}{size!s:>6}{now['seconds']:>9.3f}{ratio}{now['ua'].mean():>7.3f}{now['peak_mb']:>9.0f}"
                if args.before and head != LOGREG:
                    old = train_cell(grid, head, runs, before)
                    change = 100 * (now["ua"] - old["ua"])
                    se = change.std(ddof=1) / np.sqrt(len(change)) if len(change) > 1 else float("nan")
                    line += (f"{old['seconds']:>10.3f}{old['seconds'] / now['seconds']:>9.1f}x{old['ua'].mean():>11.3f}"
                             f"{f'{change.mean():+.1f} ± {se:.1f}':>15}")  # fmt: skip
                print(line, flush=True)
            if head_spec(head).uploads and not solved(HEADS[head], config):  # `runs` and `now`: the largest size's
                achieved, floor = floor_share(grid, head, runs, config, now["seconds"])
                alone = f", {alone_seconds(grid, head, runs, config, args.alone):.3f} s a run alone" if args.alone else ""
                print(f"  {head} at {sizes[-1]}: {achieved / 1e9:.1f} GFLOP/s of a {floor / 1e9:.1f} GFLOP/s floor "
                      f"({achieved / floor:.0%}){alone}")  # fmt: skip
    print(f"\ntotal wall time {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
