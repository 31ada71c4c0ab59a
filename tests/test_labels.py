"""Class specs: selection, merging, presets, and their errors."""

import pandas as pd
import pytest

from budget.errors import BudgetError
from budget.labels import ClassSpec, canonical_label, class_order, select_classes


def manifest(labels):
    return pd.DataFrame({"utt_id": [f"u{i}" for i in range(len(labels))], "label": labels, "source_label": labels})


def test_aliases_map_to_canonical_names():
    assert [canonical_label(x) for x in ("hap", "Happiness", " joy ", "ANG", "xxx", "tired")] == [
        "happy", "happy", "happy", "angry", "no_agreement", "tired"
    ]  # fmt: skip


def test_preset_merges_excited_into_happy():
    spec = ClassSpec.parse("iemocap4")
    assert spec.classes == ["neutral", "happy", "sad", "angry"]
    assert spec.mapping["excited"] == "happy"
    assert str(spec) == "neutral,happy+excited,sad,angry"


def test_select_relabels_and_drops():
    table = manifest(["neutral", "excited", "happy", "frustrated", "sad", "angry"])
    kept = select_classes(table, "neutral,happy+excited,sad,angry")
    assert list(kept["label"]) == ["neutral", "happy", "happy", "sad", "angry"]
    assert list(kept["source_label"]) == ["neutral", "excited", "happy", "sad", "angry"]
    assert len(select_classes(table, "all")) == 6


def test_a_class_with_no_utterances_is_an_error():
    with pytest.raises(BudgetError, match="calm have no utterances"):
        select_classes(manifest(["neutral", "sad"]), "neutral,calm")


def test_a_label_named_twice_is_an_error():
    with pytest.raises(BudgetError, match="named twice"):
        ClassSpec.parse("happy,happy+excited")
    with pytest.raises(BudgetError, match="empty class"):
        ClassSpec.parse("happy,,sad")


def test_class_order_is_canonical_then_alphabetical():
    assert class_order(["sad", "zest", "neutral", "angry", "awe"]) == ["neutral", "sad", "angry", "awe", "zest"]
