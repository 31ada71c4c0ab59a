"""Sampling, heads and ensemble training: the protocol's guarantees."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score

from budget.errors import BudgetError
from budget.features.store import FeatureSet
from budget.folds import assign_folds
from budget.heads import HEADS, PackedBatch, mlp_shape
from budget.metrics import run_metrics
from budget.sampling import FULL, balanced_subset, parse_sizes, plan_sizes
from budget.training import FrameInputs, Run, TrainConfig, train_runs


def synthetic_features(n_per_class=30, n_classes=3, dim=6, seed=0) -> tuple[FeatureSet, np.ndarray]:
    """Frame sequences whose mean depends on the class, lengths 3..20."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_classes), n_per_class)
    centres = rng.standard_normal((n_classes, dim)) * 1.5
    sequences = [centres[y] + rng.standard_normal((int(rng.integers(3, 21)), dim)) for y in labels]
    lengths = np.array([len(s) for s in sequences])
    frames = np.concatenate(sequences).astype(np.float16)
    features = FeatureSet(
        spec="synthetic",
        utt_ids=np.array([f"u{i}" for i in range(len(labels))]),
        lengths=lengths,
        offsets=np.concatenate([[0], np.cumsum(lengths)[:-1]]),
        frames=frames,
        mean=np.stack([s.mean(0) for s in sequences]).astype(np.float32),
        max=np.stack([s.max(0) for s in sequences]).astype(np.float32),
    )
    return features, labels


def runs_for(labels, size, seeds=(0, 1), test_every=5):
    test = np.arange(len(labels))[::test_every]
    train = np.setdiff1d(np.arange(len(labels)), test)
    return [Run(fold=f, seed=s, size=size, train=train[balanced_subset(labels[train], size, s + 10 * f)], test=test)
            for f in (0, 1) for s in seeds]  # fmt: skip


class TestSampling:
    def test_exact_counts_and_nesting(self):
        labels = np.array(["a"] * 50 + ["b"] * 20 + ["c"] * 33)
        previous = set()
        for size in (2, 5, 10, 20):
            subset = balanced_subset(labels, size, seed=3)
            assert pd.Series(labels[subset]).value_counts().to_dict() == {"a": size, "b": size, "c": size}
            assert previous <= set(subset)
            previous = set(subset)
        assert len(balanced_subset(labels, FULL, 3)) == len(labels)

    def test_seeds_draw_different_subsets(self):
        labels = np.array(["a"] * 50 + ["b"] * 50)
        assert set(balanced_subset(labels, 10, 0)) != set(balanced_subset(labels, 10, 1))

    def test_a_class_too_small_is_an_error_not_a_shrink(self):
        labels = np.array(["a"] * 50 + ["b"] * 7)
        with pytest.raises(BudgetError, match="cannot draw 10 per class: 'b' has 7"):
            balanced_subset(labels, 10, 0)

    def test_plan_skips_sizes_some_fold_cannot_supply(self):
        manifest = pd.DataFrame(
            {"utt_id": [f"u{i}" for i in range(60)], "group": np.repeat(["g1", "g2", "g3"], 20),
             "label": np.tile(["a", "a", "a", "b"], 15)}
        )  # fmt: skip
        folds = assign_folds(manifest)
        plan = plan_sizes([5, 10, 20, FULL], manifest, folds)
        assert plan.sizes == [5, 10, FULL]
        assert len(plan.skipped) == 1 and plan.skipped[0].startswith("20 per class")
        default = plan_sizes(None, manifest, folds)
        assert default.sizes == [1, 2, 5, 10, FULL] and "below the paper's 125" in default.note

    def test_parse_sizes(self):
        assert parse_sizes("5,10,full", None, 4) == [5, 10, FULL]
        assert parse_sizes(None, "500,1000", 4) == [125, 250]
        with pytest.raises(BudgetError, match="does not divide"):
            parse_sizes(None, "501", 4)
        with pytest.raises(BudgetError, match="not both"):
            parse_sizes("5", "20", 4)


def test_ua_is_balanced_accuracy_the_mean_per_class_recall():
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 4, 200)
    y_pred = np.where(rng.random(200) < 0.6, y_true, rng.integers(0, 4, 200))
    metrics = run_metrics(y_true, y_pred, ["neutral", "happy", "sad", "angry"])
    assert metrics["ua"] == pytest.approx(balanced_accuracy_score(y_true, y_pred))
    recalls = [np.mean(y_pred[y_true == c] == c) for c in range(4)]
    assert metrics["ua"] == pytest.approx(np.mean(recalls))
    assert metrics["recall_sad"] == pytest.approx(recalls[2])
    assert np.array(eval(metrics["confusion"])).sum() == 200


@pytest.mark.parametrize("head", sorted(HEADS))
def test_batched_training_equals_one_run_at_a_time(head):
    features, labels = synthetic_features()
    runs = runs_for(labels, size=8)
    config = TrainConfig(epochs=3, lr=3e-3, batch_size=5)
    together = train_runs(head, features, labels, runs, 3, config)
    for run, predicted in zip(runs, together, strict=True):
        alone = train_runs(head, features, labels, [run], 3, config)[0]
        np.testing.assert_array_equal(predicted, alone)


@pytest.mark.parametrize("head", sorted(HEADS))
def test_heads_learn_a_separable_problem(head):
    features, labels = synthetic_features(n_per_class=40)
    runs = runs_for(labels, size=25, seeds=(0,))
    predictions = train_runs(head, features, labels, runs, 3, TrainConfig(epochs=40, lr=3e-3, batch_size=8))
    for run, predicted in zip(runs, predictions, strict=True):
        assert balanced_accuracy_score(labels[run.test], predicted) > 0.8


@pytest.mark.parametrize("head", ["attn_pool", "mlp_pool"])
def test_padding_never_changes_a_prediction(head):
    """An utterance's logits are the same alone or packed beside longer ones (more padding)."""
    features, labels = synthetic_features()
    generators = [torch.Generator().manual_seed(e) for e in range(2)]
    model = HEADS[head](generators, features.dim, 3).eval()
    inputs = FrameInputs(features, pools_first=False, pooled_kind="mean")
    short, long_ = np.array([3]), np.array([3, 10, 11, 12])
    alone = model(inputs.batch([short, short], 1, "cpu"))
    packed = model(inputs.batch([long_, short], 4, "cpu"))  # member 1 pads to member 0's length
    torch.testing.assert_close(packed[1, 0], alone[1, 0])
    torch.testing.assert_close(packed[0, 0], alone[0, 0])


def test_pooled_heads_read_the_stored_statistics():
    features, _ = synthetic_features()
    batch = FrameInputs(features, pools_first=True, pooled_kind="meanmax").batch([np.array([0, 4])], 2, "cpu")
    assert isinstance(batch, PackedBatch) and batch.pooled.shape == (1, 2, 2 * features.dim)
    np.testing.assert_allclose(batch.pooled[0, 1, : features.dim].numpy(), features.mean[4])


def test_mlp_capacity_is_similar_across_input_widths():
    params = {}
    for dim in (34, 384, 512, 768, 1024):
        depth, width = mlp_shape(dim)
        params[dim] = dim * width + (depth - 1) * width * width
    assert mlp_shape(34)[0] == 4 and mlp_shape(1024)[0] == 1
    assert max(params.values()) / min(params.values()) < 1.6


def test_runs_of_different_sizes_cannot_share_an_ensemble():
    features, labels = synthetic_features()
    runs = runs_for(labels, size=8)[:1] + runs_for(labels, size=10)[:1]
    with pytest.raises(BudgetError, match="same number of training examples"):
        train_runs("mean_pool", features, labels, runs, 3, TrainConfig(epochs=1))


def test_a_small_memory_budget_chunks_the_ensemble_without_changing_results():
    from budget.training import _members_per_chunk

    features, labels = synthetic_features()
    runs = runs_for(labels, size=8)
    roomy = TrainConfig(epochs=2, lr=3e-3, batch_size=5)
    tight = TrainConfig(epochs=2, lr=3e-3, batch_size=5, memory_mb=1)
    assert _members_per_chunk("mlp_pool", features, tight) == 1 < _members_per_chunk("mlp_pool", features, roomy)
    for together, chunked in zip(train_runs("mlp_pool", features, labels, runs, 3, roomy),
                                 train_runs("mlp_pool", features, labels, runs, 3, tight), strict=True):  # fmt: skip
        np.testing.assert_array_equal(together, chunked)
