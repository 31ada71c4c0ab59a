"""Class-balanced, nested training subsets and the sizes a corpus can supply."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from budget.errors import BudgetError
from budget.folds import assign_folds
from budget.sampling import (
    FULL,
    Size,
    balanced_subset,
    curve_ends,
    per_class_sizes,
    plan_sizes,
    read_sizes,
    read_totals,
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
    plan = plan_sizes(list(read_sizes([5, 10, 20, "full"])), manifest, folds)
    assert plan.sizes == [5, 10, FULL]
    assert len(plan.skipped) == 1 and plan.skipped[0].startswith("20 per class")
    default = plan_sizes(None, manifest, folds)
    assert default.sizes == [1, 2, 5, 10, FULL] and "below the paper's 125" in default.note


def test_a_class_only_one_fold_holds_is_an_error_before_any_work():
    manifest = pd.DataFrame(
        {"utt_id": [f"u{i}" for i in range(30)], "group": np.repeat(["g1", "g2", "g3"], 10),
         "label": ["rare"] + ["a", "b"] * 14 + ["a"]}
    )  # fmt: skip
    for requested in (None, [Size(2), FULL]):
        with pytest.raises(BudgetError, match="class 'rare' has no training example when fold 0 is held out"):
            plan_sizes(requested, manifest, assign_folds(manifest))


def test_sizes_are_read_once_from_what_was_typed():
    assert read_sizes("5,10,full") == read_sizes([5, "10", "FULL", 5]) == (Size(5), Size(10), FULL)
    assert per_class_sizes(read_sizes("5,10,full"), None, 4) == [5, 10, FULL]
    assert per_class_sizes(None, read_totals("500,1000"), 4) == [125, 250]
    with pytest.raises(BudgetError, match="does not divide"):
        per_class_sizes(None, read_totals("501"), 4)
    with pytest.raises(BudgetError, match="not both"):
        per_class_sizes(read_sizes("5"), read_totals("20"), 4)
    with pytest.raises(BudgetError, match="--n takes totals"):
        read_totals("500,full")
    for bad, message in (("5,x", "bad size 'x'"), ("0", "must be positive"), (",", "no sizes")):
        with pytest.raises(BudgetError, match=message):
            read_sizes(bad)


def test_a_size_sorts_with_full_last_and_reads_as_a_person_writes_it():
    sizes = [Size(125), FULL, Size(6), Size(52)]
    assert sorted(sizes) == [6, 52, 125, FULL] and max(sizes) is FULL and max(s for s in sizes if s.balanced) == 125
    assert Size(250).value == 250.0 and FULL.value == float("inf") and [s.balanced for s in sizes] == [True, False, True, True]
    assert str(Size(6)) == "6" and str(FULL) == "full" and f"{Size(6):>4}" == "   6" and Size(6).to_json() == 6
    assert Size(6) == 6 and Size(6) != 7 and hash(Size(6)) == hash(6) and Size(6) != "6"  # no text: that is read_sizes'
    assert FULL.phrase() == "all training data" and Size(6).phrase("per class") == "6 per class"
    assert curve_ends(sizes) == {6, 125, FULL} and curve_ends([FULL]) == {FULL} and curve_ends(map(Size, (5, 10, 20))) == {5, 20}
    with pytest.raises(BudgetError, match="positive whole number"):
        Size(0)
