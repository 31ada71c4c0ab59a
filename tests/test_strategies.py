"""Acquisition strategies on pools whose right answer is known before they choose."""

from __future__ import annotations

import numpy as np
import pytest

from budget.errors import BudgetError
from budget.sampling import class_orders
from budget.strategies import STRATEGIES, Pool, strategy


def boundary_pool(n: int = 200, seed: int = 0) -> tuple[Pool, np.ndarray]:
    """Two classes either side of x = 0, the head's probabilities a logistic of x: the boundary is where |x| is small."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-3, 3, n)
    p_one = 1 / (1 + np.exp(-3 * x))
    embeddings = np.stack([x, rng.normal(0, 1, n)], axis=1)
    labelled = np.zeros(n, bool)
    labelled[rng.choice(n, 10, replace=False)] = True
    return Pool(embeddings, labelled, np.stack([1 - p_one, p_one], axis=1)), x


@pytest.mark.parametrize("name", ["entropy", "margin"])
def test_uncertainty_picks_the_clips_nearest_the_decision_boundary(name):
    pool, x = boundary_pool()
    choice = strategy(name).choose(pool, 15, np.random.default_rng(0))
    nearest = pool.unlabelled[np.argsort(np.abs(x[pool.unlabelled]))[:15]]
    assert set(choice.clips) == set(nearest) and not pool.labelled[choice.clips].any()
    assert np.all(np.diff(choice.scores) <= 0)  # best first


def test_badge_prefers_uncertain_clips_and_spreads_them():
    pool, x = boundary_pool(n=400)
    choice = strategy("badge").choose(pool, 20, np.random.default_rng(1))
    assert len(set(choice.clips)) == 20 and not pool.labelled[choice.clips].any()
    assert np.median(np.abs(x[choice.clips])) < 0.5 * np.median(np.abs(x[pool.unlabelled]))  # near the boundary
    assert np.ptp(pool.embeddings[choice.clips, 1]) > 2  # not all from one spot along it


def test_kcenter_covers_every_cluster_before_a_second_clip_of_any():
    rng = np.random.default_rng(2)
    centres = rng.normal(0, 50, (6, 5))
    cluster = np.repeat(np.arange(6), [40, 5, 20, 60, 10, 30])  # uneven sizes: the big ones do not win twice
    embeddings = centres[cluster] + rng.normal(0, 1, (len(cluster), 5))
    labelled = np.zeros(len(cluster), bool)
    labelled[np.flatnonzero(cluster == 3)[0]] = True  # one clip of cluster 3 is labelled already
    choice = strategy("kcenter").choose(Pool(embeddings, labelled), 5, rng)
    assert sorted(cluster[choice.clips]) == [0, 1, 2, 4, 5]
    fresh = strategy("kcenter").choose(Pool(embeddings, np.zeros(len(cluster), bool)), 6, np.random.default_rng(3))
    assert sorted(cluster[fresh.clips]) == list(range(6))


def test_balanced_takes_the_curve_s_nested_subsets_and_random_takes_the_pool_s_mix():
    labels = np.repeat([0, 1, 2], [100, 60, 20])  # a pool at 5:3:1
    orders = class_orders(labels, seed=4, fold=1)
    pool = Pool(np.zeros((len(labels), 1)), np.zeros(len(labels), bool), class_orders=orders)
    first = strategy("balanced").choose(pool, 30, np.random.default_rng(0)).clips
    assert np.bincount(labels[first]).tolist() == [10, 10, 10]
    assert set(first) == {int(p) for order in orders.values() for p in order[:10]}  # balanced_subset's 10 per class
    pool.labelled[first] = True
    more = strategy("balanced").choose(pool, 40, np.random.default_rng(0)).clips  # class 2 runs out at 20
    assert np.bincount(labels[np.concatenate([first, more])]).tolist() == [25, 25, 20]
    counts = np.zeros(3)
    for seed in range(50):
        pool = Pool(np.zeros((len(labels), 1)), np.zeros(len(labels), bool))
        counts += np.bincount(labels[strategy("random").choose(pool, 45, np.random.default_rng(seed)).clips], minlength=3)
    assert np.allclose(counts / counts.sum(), [100 / 180, 60 / 180, 20 / 180], atol=0.02)


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_the_same_seed_makes_the_same_choice(name):
    pool, _ = boundary_pool()
    pool.class_orders = class_orders((pool.embeddings[:, 0] > 0).astype(int), seed=0, fold=0)
    first = strategy(name).choose(pool, 12, np.random.default_rng(7)).clips
    again = strategy(name).choose(pool, 12, np.random.default_rng(7)).clips
    assert list(first) == list(again) and len(set(first)) == 12


def test_what_a_strategy_cannot_do_is_one_clear_error():
    pool, _ = boundary_pool(n=20)
    with pytest.raises(BudgetError, match="oracle for simulated studies only"):
        strategy("balanced").choose(pool, 2, np.random.default_rng(0))
    with pytest.raises(BudgetError, match="asked for 11 clips, the pool has 10 unlabelled"):
        strategy("random").choose(pool, 11, np.random.default_rng(0))
    with pytest.raises(BudgetError, match="train one on labelled clips first"):
        strategy("entropy").choose(Pool(pool.embeddings, pool.labelled), 2, np.random.default_rng(0))
    with pytest.raises(BudgetError, match="unknown strategy 'coreset'; choose from random, balanced"):
        strategy("coreset")
