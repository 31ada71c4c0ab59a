"""Benchmark study training on cached EmoDB features: runs trained as ensembles against one at a time.

    python benchmarks/training.py --emodb ../shared/data/emodb --whisper ../shared/models/whisper-tiny-en

The grid is ``budget compare``'s: the four heads and logistic regression on
LLDs and Whisper tiny.en features, at 50 examples per class of EmoDB's four
IEMOCAP classes, every leave-one-speaker-out fold, ``--seeds`` seeds,
``--epochs`` epochs.  It is trained twice, each in a fresh process: batched
(each (features, head) group of runs advanced together as one ensemble, as
``budget`` does) and as a plain loop that trains one run at a time through the
same code.  For each it prints runs per second, wall time and peak resident
memory, and checks that both give the same predictions (UA per run).  The
features must be in the store first (``budget extract``); extraction is not
timed.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np


def train_grid(args, one_at_a_time: bool) -> dict:
    from budget.corpora import load_corpus
    from budget.features import FeatureStore, parse_feature_spec
    from budget.folds import assign_folds
    from budget.heads import ACOUSTIC_HEADS
    from budget.metrics import run_metrics
    from budget.sampling import balanced_subset
    from budget.training import Run, TrainConfig, train_runs

    manifest = load_corpus("emodb", args.emodb, classes="neutral,happy,sad,angry")
    folds = assign_folds(manifest).to_numpy()
    classes = ["neutral", "happy", "sad", "angry"]
    labels = manifest["label"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    config = TrainConfig(epochs=args.epochs)
    store = FeatureStore(args.store)
    ua = {}
    per_head: dict[str, float] = {}
    n_runs = 0
    started = time.perf_counter()
    for spec in ("lld", f"hf:{args.whisper}"):
        features = store.load(parse_feature_spec(spec), manifest)
        assert not features.missing, "extract the features first"
        runs = []
        for fold in sorted(set(folds)):
            train, test = np.flatnonzero(folds != fold), np.flatnonzero(folds == fold)
            for seed in range(args.seeds):
                runs.append(Run(int(fold), seed, args.per_class, train[balanced_subset(labels[train], args.per_class, seed)], test))
        for head in ACOUSTIC_HEADS:
            groups = [[run] for run in runs] if one_at_a_time else [runs]
            head_started = time.perf_counter()
            for group in groups:
                for run, predicted in zip(group, train_runs(head, features, labels, group, 4, config), strict=True):
                    ua[f"{spec}|{head}|{run.fold}|{run.seed}"] = run_metrics(labels[run.test], predicted, classes)["ua"]
            per_head[f"{head} on {spec.split('/')[-1]}"] = time.perf_counter() - head_started
            n_runs += len(runs)
    seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"runs": n_runs, "seconds": seconds, "peak_mb": peak_mb, "ua": ua, "per_head": per_head}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--emodb", required=True)
    parser.add_argument("--whisper", required=True)
    parser.add_argument("--store", default=None, help="feature store (default: budget's)")
    parser.add_argument("--per-class", type=int, default=50)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--mode", choices=["batched", "sequential"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:  # a child process: train and report as JSON
        print(json.dumps(train_grid(args, one_at_a_time=args.mode == "sequential")))
        return

    from machine import describe_machine

    print(f"machine: {describe_machine()}")
    print(f"grid: 4 heads + logreg x (lld, whisper tiny.en) x 10 folds x {args.seeds} seed(s), "
          f"{args.per_class} per class, {args.epochs} epochs")  # fmt: skip
    results = {}
    for mode in ("batched", "sequential"):
        child = [sys.executable, __file__, *sys.argv[1:], "--mode", mode]
        results[mode] = json.loads(subprocess.run(child, check=True, capture_output=True, text=True).stdout)
        r = results[mode]
        print(f"{mode}: {r['runs']} runs in {r['seconds']:.1f} s ({r['runs'] / r['seconds']:.2f} runs/s), peak memory {r['peak_mb']:.0f} MB")
    for group, seconds in results["batched"]["per_head"].items():
        alone = results["sequential"]["per_head"][group]
        print(f"  {group}: batched {seconds:.1f} s, one at a time {alone:.1f} s (x{alone / seconds:.2f})")
    batched, sequential = results["batched"]["ua"], results["sequential"]["ua"]
    differing = [k for k in batched if abs(batched[k] - sequential[k]) > 1e-12]
    print(f"speed-up x{results['sequential']['seconds'] / results['batched']['seconds']:.2f}; "
          f"runs whose UA differs between the two: {len(differing)} of {len(batched)}")  # fmt: skip


if __name__ == "__main__":
    main()
