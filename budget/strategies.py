"""Acquisition strategies: which unlabelled clips to send to annotators next.

Every strategy answers one question through one small protocol
(:class:`Strategy`): given what it may see of the pool (:class:`Pool`: the
clips' pooled embeddings, the current head's class probabilities on them,
which are labelled already) and how many clips to add, it returns the clips
it chooses, best first, with a score for each.  Adding a strategy is one class
in :data:`STRATEGIES`.

* ``random``: clips drawn at random, so at the pool's own class mix: what
  labelling without choosing buys, the baseline every other strategy is
  compared with.
* ``balanced``: the class-balanced draw of a budget curve (the same nested
  subsets, from the same per-class order), which needs every clip's label in
  advance: an oracle bound for simulation, never available for real.
* ``entropy``: the highest entropy of the head's probabilities (uncertainty
  sampling, Lewis & Gale, SIGIR 1994; Settles' survey, 2009).
* ``margin``: the smallest gap between the two most probable classes
  (Scheffer, Decomain & Wrobel, IDA 2001).
* ``kcenter``: greedy k-center on the standardised pooled embeddings, each clip
  the one farthest from everything labelled or chosen (the core-set approach
  of Sener & Savarese, ICLR 2018).
* ``badge``: k-means++ seeding on gradient embeddings, the last layer's loss
  gradient with the head's own prediction as the label, ``(p - onehot(argmax
  p)) x embedding``: uncertain clips have long gradients and the seeding
  spreads them apart (BADGE, Ash et al., ICLR 2020).  The heads here are linear
  in the pooled features (logreg, mean_pool) or close to it, so the pooled
  embedding stands for the last layer's input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from budget.errors import BudgetError


@dataclass
class Pool:
    """What a strategy may see of the pool when it chooses.

    ``probabilities`` are the head's, trained on the labelled clips, for every
    clip of the pool (None before any head was trained); ``class_orders`` (each
    class's clips in the (fold, seed)'s shuffled order, :func:`budget.sampling.class_orders`)
    are the labels themselves, which only the ``balanced`` oracle reads.
    """

    embeddings: np.ndarray  # (clips, dims): mean-pooled features
    labelled: np.ndarray  # (clips,) bool
    probabilities: np.ndarray | None = None  # (clips, classes)
    class_orders: dict[object, np.ndarray] | None = None

    @property
    def unlabelled(self) -> np.ndarray:
        return np.flatnonzero(~self.labelled)

    def standardised(self) -> np.ndarray:
        """The embeddings standardised over the pool, so no dimension's scale decides a distance."""
        spread = self.embeddings.std(axis=0)
        return (self.embeddings - self.embeddings.mean(axis=0)) / np.where(spread > 0, spread, 1.0)


@dataclass(frozen=True)
class Choice:
    """Clips a strategy chose (positions in the pool), best first, and the score it ranked each by."""

    clips: np.ndarray
    scores: np.ndarray


class Strategy:
    """How a strategy chooses: :meth:`choose` ``n`` unlabelled clips of a :class:`Pool`, with ``rng`` for any draw
    (the (fold, seed)'s own generator, so a choice is reproducible and independent of other runs)."""

    name: ClassVar[str]
    reads_probabilities: ClassVar[bool] = False  # needs a head trained on the labelled clips
    oracle: ClassVar[bool] = False  # reads the labels: for simulation only, shown as a bound

    def choose(self, pool: Pool, n: int, rng: np.random.Generator) -> Choice:
        raise NotImplementedError

    def _checked(self, pool: Pool, n: int) -> np.ndarray:
        unlabelled = pool.unlabelled
        if n > len(unlabelled):
            raise BudgetError(f"{self.name}: asked for {n} clips, the pool has {len(unlabelled)} unlabelled")
        if self.reads_probabilities and pool.probabilities is None:
            raise BudgetError(f"{self.name} ranks clips by a head's probabilities: train one on labelled clips first")
        return unlabelled


class Random(Strategy):
    name = "random"

    def choose(self, pool, n, rng):
        unlabelled = self._checked(pool, n)
        chosen = rng.permutation(unlabelled)[:n]
        return Choice(chosen, np.zeros(n))


class Balanced(Strategy):
    name = "balanced"
    oracle = True

    def choose(self, pool, n, rng):
        self._checked(pool, n)
        if pool.class_orders is None:
            raise BudgetError("balanced chooses clips by their labels, which an unlabelled pool does not have: it is "
                              "an oracle for simulated studies only")  # fmt: skip
        orders = list(pool.class_orders.values())
        taken = [int(pool.labelled[order].sum()) for order in orders]  # nested: each class's first ones
        chosen = []
        for _ in range(n):  # the class with the fewest labels gets the next, the first such in class order
            open_classes = [c for c, order in enumerate(orders) if taken[c] < len(order)]
            c = min(open_classes, key=lambda c: taken[c])
            chosen.append(orders[c][taken[c]])
            taken[c] += 1
        return Choice(np.array(chosen, dtype=np.int64), np.zeros(n))


class Entropy(Strategy):
    name = "entropy"
    reads_probabilities = True

    def choose(self, pool, n, rng):
        unlabelled = self._checked(pool, n)
        p = np.clip(pool.probabilities[unlabelled], 1e-12, 1.0)
        entropy = -(p * np.log(p)).sum(axis=1)
        best = np.argsort(-entropy, kind="stable")[:n]
        return Choice(unlabelled[best], entropy[best])


class Margin(Strategy):
    name = "margin"
    reads_probabilities = True

    def choose(self, pool, n, rng):
        unlabelled = self._checked(pool, n)
        top = np.sort(pool.probabilities[unlabelled], axis=1)
        margin = top[:, -1] - top[:, -2] if top.shape[1] > 1 else top[:, -1]
        best = np.argsort(margin, kind="stable")[:n]
        return Choice(unlabelled[best], 1.0 - margin[best])


class KCenter(Strategy):
    name = "kcenter"

    def choose(self, pool, n, rng):
        unlabelled = self._checked(pool, n)
        points = pool.standardised()
        candidates = points[unlabelled]
        labelled = np.flatnonzero(pool.labelled)
        if len(labelled):
            nearest = _min_distances(candidates, points[labelled])
        else:  # nothing to be far from: start at a random clip
            nearest = np.full(len(unlabelled), np.inf)
            nearest[rng.integers(len(unlabelled))] = np.finfo(float).max
        chosen, scores = [], []
        for _ in range(n):
            i = int(np.argmax(nearest))
            chosen.append(unlabelled[i])
            scores.append(float(nearest[i]))
            # the new centre's distance to every candidate: one row, so numpy's norm, not a pairwise call per pick
            nearest = np.minimum(nearest, np.linalg.norm(candidates - candidates[i], axis=1))
            nearest[i] = -np.inf  # chosen: never again
        return Choice(np.array(chosen, dtype=np.int64), np.array(scores))


class Badge(Strategy):
    name = "badge"
    reads_probabilities = True

    def choose(self, pool, n, rng):
        from sklearn.cluster import kmeans_plusplus

        unlabelled = self._checked(pool, n)
        p = pool.probabilities[unlabelled]
        residual = p - np.eye(p.shape[1])[p.argmax(axis=1)]
        gradients = (residual[:, :, None] * pool.standardised()[unlabelled][:, None, :]).reshape(len(unlabelled), -1)
        norms = np.linalg.norm(gradients, axis=1)
        by_norm = np.argsort(-norms, kind="stable")
        seeded = [] if n == len(unlabelled) else kmeans_plusplus(gradients, n_clusters=n,
                                                                  random_state=int(rng.integers(2**31 - 1)))[1]  # fmt: skip
        # k-means++ can draw a clip twice where gradients coincide (all zero, say): the longest gradients fill in
        order = np.array(list(dict.fromkeys([*seeded, *by_norm]))[:n], dtype=np.int64)
        return Choice(unlabelled[order], norms[order])


def _min_distances(points: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Each point's Euclidean distance to its nearest centre."""
    from sklearn.metrics import pairwise_distances

    return pairwise_distances(points, centres).min(axis=1)


#: Every strategy by name: the order reports and tables show them in, the baseline first.
STRATEGIES: dict[str, Strategy] = {cls.name: cls() for cls in (Random, Balanced, Entropy, Margin, KCenter, Badge)}
BASELINE = Random.name


def strategy(name: str) -> Strategy:
    """The strategy named ``name``, or one clear error listing the choices."""
    if name not in STRATEGIES:
        raise BudgetError(f"unknown strategy {name!r}; choose from {', '.join(STRATEGIES)}")
    return STRATEGIES[name]
