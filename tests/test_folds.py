"""Speaker-independent folds and the balanced-training ceiling."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from budget.errors import BudgetError
from budget.folds import assign_folds, classes_missing, fold_names, read_fold_file, training_counts


def synthetic_manifest(n_groups: int, per_group: int = 12, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    labels = np.array(["neutral", "happy", "sad", "angry"])
    rows = [
        {"utt_id": f"g{g:03d}_{i:02d}", "group": f"g{g:03d}", "label": labels[rng.integers(0, 4)]}
        for g in range(n_groups)
        for i in range(per_group)
    ]
    return pd.DataFrame(rows)


def test_few_groups_give_leave_one_group_out():
    manifest = synthetic_manifest(5)
    folds = assign_folds(manifest)
    assert folds.nunique() == 5
    assert (manifest.groupby(folds)["group"].nunique() == 1).all()
    assert fold_names(manifest, folds) == {i: f"g{i:03d}" for i in range(5)}


def test_many_groups_give_k_grouped_folds_without_straddling():
    manifest = synthetic_manifest(40)
    folds = assign_folds(manifest, n_folds=5, seed=3)
    assert sorted(folds.unique()) == [0, 1, 2, 3, 4]
    assert (manifest.groupby("group").apply(lambda g: folds[g.index].nunique()) == 1).all()
    sizes = folds.value_counts()
    assert sizes.max() - sizes.min() <= 2 * 12
    names = fold_names(manifest, folds)  # each fold named by the speakers it holds, so the design can be audited
    for fold, name in names.items():
        assert name.split("+") == sorted(manifest.loc[folds == fold, "group"].unique())


def test_folds_are_deterministic_and_independent_of_row_order():
    manifest = synthetic_manifest(30)
    first = assign_folds(manifest, seed=1)
    shuffled = manifest.sample(frac=1.0, random_state=7)
    again = assign_folds(shuffled, seed=1)
    assert (first == again.reindex(first.index)).all()


def test_stratification_balances_labels_across_folds():
    manifest = synthetic_manifest(50, per_group=20)
    folds = assign_folds(manifest, n_folds=5)
    shares = pd.crosstab(folds, manifest["label"], normalize="index")
    assert (shares.max() - shares.min()).max() < 0.08


def test_training_counts_and_ceiling():
    manifest = pd.DataFrame(
        {
            "utt_id": [f"u{i}" for i in range(9)],
            "group": ["a", "a", "a", "b", "b", "b", "c", "c", "c"],
            "label": ["sad", "sad", "happy", "sad", "happy", "happy", "sad", "happy", "happy"],
        }
    )
    counts = training_counts(manifest, assign_folds(manifest))
    assert counts.loc[0].to_dict() == {"happy": 4, "sad": 2}  # a held out
    assert counts.loc[1].to_dict() == {"happy": 3, "sad": 3}
    assert counts.to_numpy().min() == 2


def test_one_group_is_an_error():
    with pytest.raises(BudgetError, match="at least 2 groups"):
        assign_folds(synthetic_manifest(1))


def test_a_fold_file_by_group_or_utterance_gives_its_design(tmp_path):
    manifest = synthetic_manifest(6, per_group=3)
    by_group = tmp_path / "groups.csv"
    by_group.write_text("group,fold\n" + "".join(f"g{g:03d},{'A' if g < 2 else 'B' if g < 4 else 'C'}\n" for g in range(6)))
    folds = read_fold_file(by_group, manifest)
    assert folds.tolist() == [0] * 6 + [1] * 6 + [2] * 6
    assert fold_names(manifest, folds) == {0: "g000+g001", 1: "g002+g003", 2: "g004+g005"}
    by_utterance = tmp_path / "utterances.csv"
    by_utterance.write_text("utt_id,fold\n" + "".join(f"{u},{int(u[1:4]) % 2 + 1}\n" for u in manifest["utt_id"]))
    assert read_fold_file(by_utterance, manifest).tolist() == [0, 0, 0, 1, 1, 1] * 3


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("speaker,fold\ng000,1\n", "needs a 'fold' column beside 'utt_id' or 'group'"),
        ("group,fold\ng000,1\n", "gives no fold for 5 group"),
        ("group,fold\n" + "".join(f"g{g:03d},1\n" for g in range(6)), "has 1 fold"),
        ("utt_id,fold\n" + "".join(f"g{g:03d}_{i:02d},{i}\n" for g in range(6) for i in range(3)), "puts group 'g000' in several"),
        ("", "fold file .* is empty"),
        ("group,fold\nSes01,1\nSes02,2\n", "names no group of this corpus .* is it for another corpus"),
    ],
)  # fmt: skip
def test_a_bad_fold_file_is_one_clear_error(tmp_path, text, message):
    path = tmp_path / "folds.csv"
    path.write_text(text)
    with pytest.raises(BudgetError, match=message):
        read_fold_file(path, synthetic_manifest(6, per_group=3))


def test_groups_a_fold_file_lists_and_the_corpus_lacks_are_named_in_one_line(tmp_path):
    path = tmp_path / "folds.csv"
    path.write_text("group,fold\n" + "".join(f"g{g:03d},{g % 2}\n" for g in range(9)))
    lines = []
    folds = read_fold_file(path, synthetic_manifest(6, per_group=3), log=lines.append)
    assert folds.nunique() == 2
    assert lines == [f"fold file {path} lists 3 group(s) this corpus lacks, ignored: g006, g007, g008"]


def test_classes_missing_names_each_fold_without_a_class():
    manifest = pd.DataFrame({"group": ["a", "a", "b", "b", "c"], "label": ["sad", "angry", "sad", "sad", "angry"]})
    folds = pd.Series([0, 0, 1, 1, 2])
    assert classes_missing(manifest, folds, ["sad", "angry", "happy"]) == {0: ["happy"], 1: ["angry", "happy"], 2: ["sad", "happy"]}
    assert classes_missing(manifest, folds, ["sad", "angry"]) == {1: ["angry"], 2: ["sad"]}
