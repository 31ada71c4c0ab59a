"""Acquisition runs: a head retrained round by round on the clips a strategy chose from a fold's training pool.

A *stream* is one (fold, seed, strategy).  The training folds are the
unlabelled pool and the held-out fold the test, as in a budget curve.  Every
strategy but the ``balanced`` oracle starts from the same seed set of its
(fold, seed): one clip of each class, the rest at random (so at the pool's
mix), drawn from the (fold, seed)'s own seed sequence; the oracle starts from
the curve's balanced subset.  After each round the head is trained on the
labelled clips, its UA measured on the held-out fold, and its class
probabilities on the rest of the pool handed to the strategy, which chooses
the clips that bring the labelled set to the next size.  Sizes are clips
annotated; ``full`` is every clip of the pool.

:func:`acquire` runs every round of a group of streams, training each round's
runs together (one ensemble where the head allows; a run several streams share,
the seed set's or the whole pool's, once), and returns one row per
(stream, size): a results table's row with the strategy beside it, and the
clips the round added (``acquired``), so a study can say which clips a team
would have sent.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import numpy as np

from budget.engine.device import training_device
from budget.engine.packed import DeviceFeatures
from budget.errors import BudgetError
from budget.features.featureset import FeatureSet
from budget.grid import Run
from budget.metrics import run_metrics
from budget.registry import head_spec
from budget.results import RunOutput
from budget.sampling import Size, class_orders
from budget.strategies import Pool, strategy


@dataclass(frozen=True)
class Stream:
    """One (fold, seed, strategy) of an acquisition study."""

    fold: int
    seed: int
    strategy: str


def stream_rng(fold: int, seed: int, purpose: str) -> np.random.Generator:
    """A generator of the (fold, seed)'s own seed sequence for one purpose (the seed set, or a strategy's draws):
    reproducible, and independent of which other streams run beside it."""
    return np.random.default_rng(np.random.SeedSequence([seed, fold, *purpose.encode()]))


def seed_set(pool_labels: np.ndarray, size: int, fold: int, seed: int) -> np.ndarray:
    """Positions (in the pool) of the seed set every non-oracle strategy of a (fold, seed) starts from: one clip of
    each class, then clips at random from the rest, so at the pool's own mix."""
    classes = np.unique(pool_labels)
    if size < len(classes):
        raise BudgetError(f"the seed set of {size} clips cannot hold one of each of {len(classes)} classes; start from "
                          f"at least {len(classes)} clips")  # fmt: skip
    rng = stream_rng(fold, seed, "seed set")
    first = np.array([rng.choice(np.flatnonzero(pool_labels == c)) for c in classes])
    rest = rng.permutation(np.setdiff1d(np.arange(len(pool_labels)), first))[: size - len(classes)]
    return np.concatenate([first, rest])


def acquire(trainer, head: str, inputs: dict[str, FeatureSet], labels: np.ndarray, folds: np.ndarray,
            streams: list[Stream], sizes: list[Size], n_classes: int, config, classes: list[str]) -> list[dict]:  # fmt: skip
    """Every round of ``streams``: per stream and size, the held-out metrics of the head trained on the labelled
    clips, the clips that round added and what training and choosing took.

    ``trainer`` is :func:`budget.registry.train`'s protocol (asked for probabilities); ``folds`` gives each row of
    ``inputs`` its fold; ``sizes`` are clips annotated, ascending, the first the seed set's.
    """
    features = inputs["single"]
    names = np.asarray(classes)[labels]  # the curve draws its per-class orders over class names: the oracle must too
    states = [_StreamState.start(stream, folds, labels, names, sizes[0], features) for stream in streams]
    uploaded = DeviceFeatures.upload(features, training_device(config)) if head_spec(head).uploads else None  # once
    rows = []
    for size in sizes:
        started = time.perf_counter()
        runs = [state.run(size) for state in states]
        distinct = {_identity(run): run for run in runs}  # a run several streams share trains once
        trained = trainer(head, inputs, labels, list(distinct.values()), n_classes, config, uploaded=uploaded,
                          probabilities=True)  # fmt: skip
        by_identity = dict(zip(distinct, map(RunOutput.of, trained), strict=True))
        outputs = [by_identity[_identity(run)] for run in runs]
        train_seconds = (time.perf_counter() - started) / len(states)
        for state, run, output in zip(states, runs, outputs, strict=True):
            on_pool = len(run.test) - len(state.test)
            metrics = run_metrics(labels[state.test], output.predictions[on_pool:], classes)
            counts = np.bincount(labels[run.train], minlength=n_classes).tolist()
            rows.append({"strategy": state.stream.strategy, "size": size, "n_train": len(run.train),
                         "fold": state.stream.fold, "seed": state.stream.seed, **metrics,
                         "labelled_counts": json.dumps(counts),
                         "acquired": json.dumps([str(u) for u in features.utt_ids[state.pool[state.added]]]),
                         "train_seconds": train_seconds, "select_seconds": state.select_seconds})  # fmt: skip
            state.select_seconds = 0.0
            following = [s for s in sizes if s > size]
            if following:
                state.choose(following[0], output.probabilities[:on_pool])
    return rows


def _identity(run: Run) -> tuple:
    """What a run's result depends on: its fold, seed and size, and the clips it trains on and predicts.  Streams of a
    (fold, seed) share the seed set's round (every strategy but the oracle) and the whole pool's (all of them)."""
    return run.fold, run.seed, run.size, run.train.tobytes(), run.test.tobytes()


def distinct_rounds(strategies: list[str], sizes: list[Size]) -> list[int]:
    """How many distinct runs a (fold, seed)'s streams of ``strategies`` train at each of ``sizes``: one for the
    seed set's round of every strategy but the oracle, one for the whole pool's, one a stream otherwise."""
    oracles = sum(strategy(name).oracle for name in strategies)
    first = oracles + (len(strategies) > oracles)
    return [1 if size.full else first if i == 0 else len(strategies) for i, size in enumerate(sizes)]


class _StreamState:
    """A stream between rounds: its pool and test positions, which pool clips are labelled, what the last round
    added."""

    def __init__(self, stream: Stream, pool: np.ndarray, test: np.ndarray, pool_names: np.ndarray,
                 embeddings: np.ndarray):  # fmt: skip
        self.stream, self.pool, self.test = stream, pool, test
        self.labelled = np.zeros(len(pool), bool)
        self.added = np.zeros(0, np.int64)
        self.orders = class_orders(pool_names, stream.seed, stream.fold)  # as balanced_subset draws a curve's
        self.embeddings = embeddings
        self.rng = stream_rng(stream.fold, stream.seed, stream.strategy)
        self.select_seconds = 0.0

    @classmethod
    def start(cls, stream: Stream, folds: np.ndarray, labels: np.ndarray, names: np.ndarray, first: Size,
              features: FeatureSet) -> _StreamState:  # fmt: skip
        pool, test = np.flatnonzero(folds != stream.fold), np.flatnonzero(folds == stream.fold)
        state = cls(stream, pool, test, names[pool], features.mean[pool])
        if first.full:
            raise BudgetError("an acquisition study starts from a seed set smaller than the pool: give a size in clips first")
        if strategy(stream.strategy).oracle:
            state.choose(first, None)
        else:
            state.added = seed_set(labels[pool], first.per_class, stream.fold, stream.seed)
            state.labelled[state.added] = True
        return state

    def run(self, size: Size) -> Run:
        """The round's run: the labelled clips to train on; the rest of the pool (for the strategy) and the held-out
        fold to predict."""
        labelled = int(self.labelled.sum())
        if labelled != (len(self.pool) if size.full else size.per_class):
            raise BudgetError(f"{self.stream}: {labelled} clips labelled at the round of {size}")
        return Run(self.stream.fold, self.stream.seed, size, self.pool[self.labelled],
                   np.concatenate([self.pool[~self.labelled], self.test]))  # fmt: skip

    def choose(self, size: Size, probabilities: np.ndarray | None) -> None:
        """Label the clips the strategy chooses to bring the labelled set to ``size`` (every clip for ``full``)."""
        wanted = int((~self.labelled).sum()) if size.full else size.per_class - int(self.labelled.sum())
        chosen_by = strategy(self.stream.strategy)
        if size.full:  # every clip: nothing to choose
            chosen = np.flatnonzero(~self.labelled)
        else:
            full = None
            if probabilities is not None:
                full = np.full((len(self.pool), probabilities.shape[1]), np.nan)
                full[~self.labelled] = probabilities
            started = time.perf_counter()
            pool = Pool(self.embeddings, self.labelled.copy(), full, self.orders if chosen_by.oracle else None)
            chosen = chosen_by.choose(pool, wanted, self.rng).clips
            self.select_seconds = time.perf_counter() - started
        self.labelled[chosen] = True
        self.added = np.asarray(chosen, dtype=np.int64)
