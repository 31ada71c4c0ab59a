"""What a fitted attn_pool run costs as its subset grows: seconds, objective evaluations, and seconds per evaluation.

    python benchmarks/attention_fits.py --synthetic ravdess [--runs 6] [--segments 0,32]
    python benchmarks/attention_fits.py --emodb ../shared/data/emodb --whisper ../shared/models/whisper-tiny-en

The same grids as ``benchmarks/training.py`` (its ``--synthetic`` shapes, or
EmoDB's four classes from the feature store).  Per size, the first ``--runs``
runs are fitted as a study fits them (the mean-pooling start for all, then each
run alone); it prints seconds per run, the training frames a run reads, the
mean number of evaluations of each run's objective (every L-BFGS iteration
evaluates it at least once), milliseconds per evaluation, the log-log
slope of seconds per run against training utterances between consecutive
sizes (1: cost grows as the subset; 2: as its square), and the runs' mean UA
on their test folds with the seconds that prediction took apart.  ``--segments``
lists the stretches of each utterance attention weighs (``attention_segments``;
0: every frame), each a table of its own.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch
import training as bench

from budget.engine.config import TrainConfig
from budget.engine.lbfgs import attention_logits, fit_attention
from budget.engine.packed import prepared_inputs
from budget.heads import AttnPool
from budget.metrics import run_metrics
from budget.sampling import read_sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--synthetic", choices=list(bench.SHAPES))
    parser.add_argument("--emodb")
    parser.add_argument("--whisper")
    parser.add_argument("--store", default=None)
    parser.add_argument("--per-class", default="6,13,26,52,full", help="sizes on EmoDB")
    parser.add_argument("--runs", type=int, default=6, help="runs fitted at each size")
    parser.add_argument("--iterations", default="0", help="attention_iterations settings, comma-separated (0: to tolerance)")
    parser.add_argument("--segments", default="0", help="attention_segments settings, comma-separated (0: every frame)")
    args = parser.parse_args()
    if not (args.synthetic or (args.emodb and args.whisper)):
        parser.error(f"give --emodb and --whisper, or --synthetic {'/'.join(bench.SHAPES)}")
    from machine import describe_machine

    settings = [TrainConfig(device="cpu", attention_segments=int(segments), attention_iterations=int(iterations))
                for segments in args.segments.split(",") for iterations in args.iterations.split(",")]  # fmt: skip
    device = torch.device("cpu")
    print(f"machine: {describe_machine()}")
    if args.synthetic:
        grids = [bench.synthetic_grid(bench.SHAPES[args.synthetic], 1.0, device, 1)]
    else:
        args.seeds, args.sizes = 1, read_sizes(args.per_class)
        grids = bench.emodb_grids(args, device)
    for grid, config in ((grid, config) for grid in grids for config in settings):
        inputs = prepared_inputs(AttnPool, grid.features, config)
        print(f"\n{grid.name}: {len(grid.features)} utterances, {grid.features.dim}-d, "
              f"mean {np.mean(grid.features.lengths):.0f} frames; attention_segments {config.attention_segments}, "
              f"attention_iterations {config.attention_iterations}")  # fmt: skip
        print(f"{'size':>6}{'utterances':>12}{'frames':>9}{'s/run':>8}{'evaluations':>13}{'ms/eval':>9}{'slope':>7}"
              f"{'UA':>7}{'predict s':>11}")  # fmt: skip
        previous = None
        for size in dict.fromkeys(run.size for run in grid.runs):
            runs = [run for run in grid.runs if run.size == size][: args.runs]
            fit_attention(inputs, grid.labels, runs[:1], grid.n_classes, config).__next__()  # warm
            started = time.perf_counter()
            heads = list(fit_attention(inputs, grid.labels, runs, grid.n_classes, config))
            seconds = (time.perf_counter() - started) / len(runs)
            started = time.perf_counter()
            predicted = [attention_logits(head, inputs, run.test)[0].argmax(-1).numpy()
                         for head, run in zip(heads, runs, strict=True)]  # fmt: skip
            predicting = (time.perf_counter() - started) / len(runs)
            classes = [str(c) for c in range(grid.n_classes)]
            ua = np.mean([run_metrics(grid.labels[run.test], p, classes)["ua"] for run, p in zip(runs, predicted, strict=True)])
            evaluations = float(np.mean([head.evaluations for head in heads]))
            n_train = float(np.mean([len(run.train) for run in runs]))
            frames = float(np.mean([inputs.lengths[run.train].sum() for run in runs]))
            slope = f"{math.log(seconds / previous[1]) / math.log(n_train / previous[0]):>7.2f}" if previous else f"{'-':>7}"
            print(f"{size!s:>6}{n_train:>12.0f}{frames:>9.0f}{seconds:>8.3f}{evaluations:>13.0f}"
                  f"{1000 * seconds / evaluations:>9.1f}{slope}{100 * ua:>7.1f}{predicting:>11.3f}", flush=True)  # fmt: skip
            previous = (n_train, seconds)

if __name__ == "__main__":
    main()
