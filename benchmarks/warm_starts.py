"""Would warm starts make acquisition rounds cheaper?  Iterations of each round's fit from cold and from the last round.

    python benchmarks/warm_starts.py --emodb ../shared/data/emodb --whisper ../shared/models/whisper-tiny-en

An acquisition stream refits its head after every round on a labelled set
that grew (here: random clips at EmoDB's seven-class mix, from the seed set of
:func:`budget.acquisition.seed_set` at 14 clips, doubling to 224, on every
fold and ``--seeds`` seeds).  For each round after the first, both fitted
heads are fitted twice on the same clips: from cold, as a study fits them, and
from the stream's previous solution.  ``logreg`` is scikit-learn's
(``warm_start``), ``mean_pool`` the toolkit's L-BFGS (:func:`fit_full_batch`,
one run at a time, the previous round's weights in place of its zero start).
It prints, per feature set, head and size, the mean solver iterations (logreg)
or objective evaluations (mean_pool) of each, the warm-to-cold ratio of the
seconds, and how often the two fits predict the same class on the held-out fold.
"""

from __future__ import annotations

import argparse
import time
from contextlib import contextmanager

import numpy as np
import torch

from budget.acquisition import seed_set, stream_rng
from budget.engine import lbfgs
from budget.engine.config import TrainConfig
from budget.engine.packed import DeviceFeatures
from budget.grid import Run
from budget.heads import MeanPool
from budget.sampling import Size

SIZES = (14, 28, 56, 112, 224)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--emodb", required=True)
    parser.add_argument("--whisper", required=True)
    parser.add_argument("--store", default=None)
    parser.add_argument("--seeds", type=int, default=2)
    args = parser.parse_args()
    from machine import describe_machine

    from budget.corpora import load_corpus
    from budget.features import FeatureStore, parse_feature_spec
    from budget.folds import assign_folds

    print(f"machine: {describe_machine()}")
    manifest = load_corpus("emodb", args.emodb)
    classes = sorted(manifest["label"].unique())
    labels = manifest["label"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    folds = assign_folds(manifest).to_numpy()
    store = FeatureStore(args.store)
    print(f"{'features':>10}{'head':>11}{'clips':>7}{'fits':>6}{'cold':>8}{'warm':>8}{'seconds warm/cold':>19}{'same':>7}")
    for spec in ("lld", f"hf:{args.whisper}"):
        features = store.load(parse_feature_spec(spec), manifest, frames=False)
        if features.missing:
            raise SystemExit(f"extract {spec} first: budget extract --root {args.emodb} -f {spec}")
        rounds = list(streams(labels, folds, args.seeds))
        for head, fit in (("logreg", fit_logreg), ("mean_pool", fit_mean_pool(features, labels, len(classes)))):
            rows = {size: [] for size in SIZES[1:]}
            for previous, run in rounds:
                start = fit(features.mean, labels, previous, None)[0]  # the last round's solution
                cold, warm = fit(features.mean, labels, run, None), fit(features.mean, labels, run, start)
                rows[len(run.train)].append((cold[1], warm[1], cold[2], warm[2], np.mean(cold[3] == warm[3])))
            for size, measured in rows.items():
                cold_it, warm_it, cold_s, warm_s, same = np.array(measured).mean(axis=0)
                print(f"{spec.split('/')[-1]:>10}{head:>11}{size:>7}{len(measured):>6}{cold_it:>8.1f}{warm_it:>8.1f}"
                      f"{warm_s / cold_s:>19.2f}{same:>7.3f}", flush=True)  # fmt: skip


def streams(labels: np.ndarray, folds: np.ndarray, seeds: int):
    """``(previous round's run, this round's run)`` for every round after the first of every (fold, seed)'s random
    stream: clips at the pool's mix, each round's labelled set a superset of the last."""
    for fold in np.unique(folds):
        pool, test = np.flatnonzero(folds != fold), np.flatnonzero(folds == fold)
        for seed in range(seeds):
            first = seed_set(labels[pool], SIZES[0], int(fold), seed)
            rest = stream_rng(int(fold), seed, "random").permutation(np.setdiff1d(np.arange(len(pool)), first))
            order = np.concatenate([first, rest])
            for smaller, larger in zip(SIZES[:-1], SIZES[1:], strict=True):
                yield (Run(int(fold), seed, Size(smaller), pool[order[:smaller]], test),
                       Run(int(fold), seed, Size(larger), pool[order[:larger]], test))  # fmt: skip


def fit_logreg(x: np.ndarray, labels: np.ndarray, run: Run, start):
    """scikit-learn's logistic regression as the toolkit's logreg fits it, from ``start`` (a fitted classifier) where
    given: ``(classifier, iterations, seconds, predictions on the held-out fold)``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    classifier = LogisticRegression(C=TrainConfig().l2_c, max_iter=2000, warm_start=start is not None)
    if start is not None:
        classifier.coef_, classifier.intercept_ = start.coef_.copy(), start.intercept_.copy()
    model = make_pipeline(StandardScaler(), classifier)
    started = time.perf_counter()
    model.fit(x[run.train], labels[run.train])
    seconds = time.perf_counter() - started
    return classifier, float(classifier.n_iter_[0]), seconds, model.predict(x[run.test])


def fit_mean_pool(features, labels: np.ndarray, n_classes: int):
    """The toolkit's mean_pool fit of one run, from ``start`` (a fitted head's weights) where given."""
    config = TrainConfig(device="cpu")
    inputs = DeviceFeatures.upload(features, torch.device("cpu"))

    def fit(_x, labels, run: Run, start):
        with started_at(start):
            began = time.perf_counter()
            head = lbfgs.fit_full_batch(MeanPool, inputs, labels, [run], n_classes, config)
            seconds = time.perf_counter() - began
        with torch.inference_mode():
            predicted = head.shared_logits(inputs.pooled("mean")[torch.from_numpy(run.test)])[0].argmax(-1).numpy()
        weights = {name: weight.detach().clone() for name, weight in head.named_parameters()}
        return weights, float(head.evaluations), seconds, predicted

    return fit


@contextmanager
def started_at(weights: dict[str, torch.Tensor] | None):
    """Within it, the L-BFGS fits start from ``weights`` instead of zero (None: unchanged)."""
    if weights is None:
        yield
        return
    zero = lbfgs._zero_head

    def from_weights(*args, **kwargs):
        head = zero(*args, **kwargs)
        with torch.no_grad():
            for name, weight in head.named_parameters():
                weight.copy_(weights[name])
        return head

    lbfgs._zero_head = from_weights
    try:
        yield
    finally:
        lbfgs._zero_head = zero


if __name__ == "__main__":
    main()
