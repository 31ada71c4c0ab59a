"""Class-balanced, nested training subsets and the sizes a corpus can supply."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from budget.errors import BudgetError
from budget.folds import assign_folds
from budget.sampling import (
    FULL,
    balanced_subset,
    curve_ends,
    is_balanced,
    parse_sizes,
    plan_sizes,
    size_phrase,
    size_value,
)


def test_exact_counts_and_nesting():
    labels = np.array(["a"] * 50 + ["b"] * 20 + ["c"] * 33)
    previous = set()
    for size in (2, 5, 10, 20):
        subset = balanced_subset(labels, size, seed=3)
        assert pd.Series(labels[subset]).value_counts().to_dict() == {"a": size, "b": size, "c": size}
        assert previous <= set(subset)
        previous = set(subset)
    assert len(balanced_subset(labels, FULL, 3)) == len(labels)


def test_seeds_draw_different_subsets():
    labels = np.array(["a"] * 50 + ["b"] * 50)
    assert set(balanced_subset(labels, 10, 0)) != set(balanced_subset(labels, 10, 1))


def test_folds_with_identical_label_sequences_draw_different_subsets():
    """RAVDESS-like designs: every fold's training labels come in the same order."""
    labels = np.tile(["a", "b", "c", "d"], 12)
    for seed in range(3):
        fold0, fold1 = balanced_subset(labels, 4, seed, fold=0), balanced_subset(labels, 4, seed, fold=1)
        assert set(fold0) != set(fold1)
        assert set(fold0) <= set(balanced_subset(labels, 8, seed, fold=0))  # still nested within a (fold, seed)


def test_a_class_too_small_is_an_error_not_a_shrink():
    labels = np.array(["a"] * 50 + ["b"] * 7)
    with pytest.raises(BudgetError, match="cannot draw 10 per class: 'b' has 7"):
        balanced_subset(labels, 10, 0)


def test_plan_skips_sizes_some_fold_cannot_supply():
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


def test_a_class_only_one_fold_holds_is_an_error_before_any_work():
    manifest = pd.DataFrame(
        {"utt_id": [f"u{i}" for i in range(30)], "group": np.repeat(["g1", "g2", "g3"], 10),
         "label": ["rare"] + ["a", "b"] * 14 + ["a"]}
    )  # fmt: skip
    for requested in (None, [2, FULL]):
        with pytest.raises(BudgetError, match="class 'rare' has no training example when fold 0 is held out"):
            plan_sizes(requested, manifest, assign_folds(manifest))


def test_parse_sizes():
    assert parse_sizes("5,10,full", None, 4) == [5, 10, FULL]
    assert parse_sizes(None, "500,1000", 4) == [125, 250]
    with pytest.raises(BudgetError, match="does not divide"):
        parse_sizes(None, "501", 4)
    with pytest.raises(BudgetError, match="not both"):
        parse_sizes("5", "20", 4)


def test_size_labels_read_as_numbers_with_full_last():
    labels = pd.Series(["125", "full", "6", "52"])
    assert sorted(labels, key=size_value) == ["6", "52", "125", "full"]
    assert size_value(250) == 250.0 and size_value(FULL) == float("inf")
    assert list(is_balanced(labels)) == [True, False, True, True]
    assert curve_ends(labels) == {"6", "125", "full"} and curve_ends([FULL]) == {FULL} and curve_ends([5, 10, 20]) == {5, 20}
    assert size_phrase("full") == "all training data" and size_phrase(6, "per class") == "6 per class"
