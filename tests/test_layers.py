"""Layer sweeps from one ``:all`` extraction (``--layers``) and layer weights learned with the head (``:weighted``)."""

from __future__ import annotations

import json
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from corpus_builders import build_iemocap
from feature_helpers import tiny_encoder

from budget.engine.config import TrainConfig
from budget.engine.runs import train_runs
from budget.errors import BudgetError
from budget.features.featureset import FeatureSet, MappedFrames
from budget.features.layers import FeatureChoice, feature_choices, read_layers
from budget.grid import Run
from budget.heads import AttnPool, MeanPool, MLPPool, PackedBatch
from budget.results import RunOutput, layer_weights
from budget.study import Study, StudyConfig
from budget.study.run import frames_read

ENCODER = {"hf:m:all": SimpleNamespace(n_layers=3), "lld": SimpleNamespace()}


def test_a_sweep_names_each_layer_and_the_weighted_sum_reads_the_all_entry():
    choices = feature_choices(("lld", "hf:m:all", "hf:m:weighted"), read_layers("all"), ENCODER)
    assert [c.name for c in choices] == ["lld", "hf:m:0", "hf:m:1", "hf:m:2", "hf:m:3", "hf:m:weighted"]
    assert {c.stored for c in choices[1:]} == {"hf:m:all"} and choices[-1].weighted and choices[2].layer == 1
    picked = feature_choices(("hf:m:all",), read_layers("last,1,last"), ENCODER)
    assert [c.name for c in picked] == ["hf:m:3", "hf:m:1"]
    assert read_layers([2, "last"]) == (2, "last") and read_layers(None) is None


@pytest.mark.parametrize(
    ("specs", "layers", "message"),
    [
        (("hf:m:all",), None, "pick some with --layers"),
        (("lld",), "2", "name one as hf:<model>:all"),
        (("hf:m:all",), "4", "layer 4 out of range 0..3"),
        (("hf:m:all", "hf:m:2"), "2", "feature set named twice: hf:m:2"),
        (("hf:m:all",), "middle", "'last' or 'all'; got 'middle'"),
    ],
)
def test_layer_choices_that_cannot_be_read_are_one_clear_error(specs, layers, message):
    with pytest.raises(BudgetError, match=message):
        feature_choices(specs, read_layers(layers), ENCODER)


def test_a_feature_set_s_frames_are_read_only_where_a_head_that_trains_on_it_reads_them():
    layer, weighted = FeatureChoice("hf:m:2", "hf:m:all", layer=2), FeatureChoice("hf:m:weighted", "hf:m:all", weighted=True)
    assert not frames_read(layer, ("logreg", "mean_pool", "meanmax_pool"))
    assert frames_read(layer, ("mean_pool", "attn_pool")) and frames_read(layer, ("mlp_pool",))
    assert not frames_read(weighted, ("mean_pool", "attn_pool"))  # attention never trains on stacked layers
    assert frames_read(weighted, ("mean_pool", "mlp_pool"))


def test_a_weighted_feature_set_needs_a_head_that_learns_layer_weights():
    with pytest.raises(BudgetError, match="needs a head that learns layer weights: mean_pool, mlp_pool"):
        StudyConfig(features=("hf:m:weighted",), heads=("attn_pool", "logreg"))
    assert StudyConfig().with_overrides(layers="1,last").layers == (1, "last")
    with pytest.raises(BudgetError, match="attn_pool reads one layer"):
        AttnPool([torch.Generator()], 4, 2, stacked=3)


@pytest.mark.parametrize("head_class", [MeanPool, MLPPool])
def test_a_head_over_identical_stacked_layers_computes_what_it_computes_on_one(head_class):
    """Equal weights over copies of one layer are that layer: the mix, its folded standardisation and the
    classifier agree with the single-layer head to rounding."""

    def make(stacked):
        head = head_class([torch.Generator().manual_seed(i) for i in range(2)], 6, 3, dropout=0.0, stacked=stacked)
        rng = torch.Generator().manual_seed(9)
        shift, scale = torch.randn(2, 6, generator=rng), torch.rand(2, 6, generator=rng) + 0.5
        head.set_standardisation(shift.repeat(1, stacked), scale.repeat(1, stacked))
        return head.eval()

    one, three = make(1), make(3)
    x = torch.randn(2, 5, 6, generator=torch.Generator().manual_seed(1))
    if head_class.pools_first:
        logits = [h(PackedBatch(n_slots=5, pooled=p)) for h, p in ((one, x), (three, x.repeat(1, 1, 3)))]
        torch.testing.assert_close(one.shared_logits(x[0]), three.shared_logits(x[0].repeat(1, 3)))
    else:
        members = torch.zeros(2, 2, 5, dtype=torch.bool)
        members[:, 0, :3], members[:, 1, 3:] = True, True
        counts = torch.tensor([[3, 2], [3, 2]])
        logits = [h(PackedBatch(n_slots=2, frames=f, members=members, counts=counts))
                  for h, f in ((one, x), (three, x.repeat(1, 1, 3)))]  # fmt: skip
    torch.testing.assert_close(logits[0], logits[1], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(three.layer_weights().numpy(), 1 / 3)


def _layered(n: int = 60, frames: int = 6, width: int = 4, informative: int = 1, layers: int = 3, seed: int = 0):
    """Stacked features where one layer carries the class (its frames shifted by the label) and the rest are noise."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    stacked = rng.normal(0, 1, (n * frames, layers, width)).astype(np.float32)
    stacked[:, informative, 0] += 1.5 * np.repeat(labels, frames)
    flat = stacked.reshape(n * frames, layers * width)
    per_utterance = flat.reshape(n, frames, -1)
    features = FeatureSet("hf:m:weighted", np.array([f"u{i}" for i in range(n)]), np.full(n, frames),
                          np.arange(n) * frames, flat, per_utterance.mean(1), per_utterance.max(1), stacked=layers)  # fmt: skip
    runs = [Run(0, seed, 10, np.arange(0, 40) + seed, np.arange(40, n)) for seed in range(2)]
    return features, labels, runs


@pytest.mark.parametrize(("head", "config"), [
    (MeanPool, TrainConfig(device="cpu")),
    (MLPPool, TrainConfig(device="cpu", steps=150, lr=1e-2, batch_size=8, bf16=False)),
])  # fmt: skip
def test_learned_layer_weights_lean_on_the_layer_that_holds_the_class(head, config):
    features, labels, runs = _layered()
    outputs = train_runs(head, features, labels, runs, 3, config)
    assert all(isinstance(o, RunOutput) for o in outputs)
    for output in outputs:
        assert output.layer_weights.sum() == pytest.approx(1.0, abs=1e-5)
        assert np.argmax(output.layer_weights) == 1 and output.layer_weights[1] > 0.4
        assert (output.predictions == labels[40:]).mean() > 0.6
    alone = train_runs(head, features, labels, runs[1:], 3, config)[0]
    np.testing.assert_array_equal(alone.predictions, outputs[1].predictions)  # a run never depends on its mates
    np.testing.assert_allclose(alone.layer_weights, outputs[1].layer_weights, atol=1e-6)


def test_a_weighted_sum_of_frames_left_in_the_store_trains_as_the_copy_does(tmp_path):
    """Hidden states stored per frame ``(frames, layers, width)`` and read by each step, stacked side by side:
    the same runs as on a copy of every stacked frame."""
    features, labels, runs = _layered()
    layered = np.asarray(features.frames).reshape(len(features.frames), features.stacked, -1).astype(np.float16)
    np.save(tmp_path / "0.frames.npy", layered)
    mapped = MappedFrames([tmp_path / "0.frames.npy"], np.zeros(len(features), dtype=np.int64), features.offsets,
                          features.lengths)  # fmt: skip
    stacked = replace(features, frames=mapped.reshape(*features.frames.shape))
    copied = replace(features, frames=layered.reshape(features.frames.shape))
    with pytest.raises(BudgetError, match="cannot reshape"):
        mapped.reshape(len(mapped), 5)
    config = TrainConfig(device="cpu", steps=30, lr=1e-2, batch_size=8)
    for head in (MLPPool, MeanPool):
        for read, held in zip(train_runs(head, stacked, labels, runs, 3, config), train_runs(head, copied, labels, runs, 3, config),
                              strict=True):  # fmt: skip
            np.testing.assert_array_equal(read.predictions, held.predictions)
            np.testing.assert_array_equal(read.layer_weights, held.layer_weights)


def test_one_layer_of_frames_left_in_the_store_is_copied_once_beside_it_and_trains_as_its_copy_does(tmp_path,
                                                                                                     monkeypatch):
    """One hidden state of rows that store every layer ``(frames, layers, width)``: uploaded, it is written once to a
    scratch file of that layer alone (in the store's precision, beside the store), and every frame head trains on
    it as on a copy of that layer; where the disk lacks room, the rows are read as they are."""
    from budget.engine import packed
    from budget.engine.packed import DeviceFeatures, ScratchFrames

    features, labels, runs = _layered()
    layered = np.asarray(features.frames).reshape(len(features.frames), features.stacked, -1).astype(np.float16)
    np.save(tmp_path / "0.frames.npy", layered)
    mapped = MappedFrames([tmp_path / "0.frames.npy"], np.zeros(len(features), dtype=np.int64), features.offsets,
                          features.lengths, layer=1)  # fmt: skip
    one = replace(features, frames=mapped, mean=features.mean[:, 4:8], max=features.max[:, 4:8], stacked=1)
    copied = replace(one, frames=layered[:, 1])
    uploaded = DeviceFeatures.upload(one, torch.device("cpu"))
    assert isinstance(uploaded._frames, ScratchFrames) and uploaded._frames.values.dtype == np.float16
    assert uploaded._frames.folder == tmp_path and uploaded.mapped
    np.testing.assert_array_equal(uploaded.block(0, len(layered)).numpy(), layered[:, 1].astype(np.float32))
    config = TrainConfig(device="cpu", steps=30, lr=1e-2, batch_size=8, attention_segments=3)
    for head in (MLPPool, AttnPool):
        read, held = train_runs(head, one, labels, runs, 3, config), train_runs(head, copied, labels, runs, 3, config)
        for a, b in zip(read, held, strict=True):
            np.testing.assert_array_equal(RunOutput.of(a).predictions, RunOutput.of(b).predictions)
    monkeypatch.setattr(packed, "SCRATCH_MARGIN", 2**62)  # a disk without room for the copy: the rows are read
    assert DeviceFeatures.upload(one, torch.device("cpu"))._frames is mapped


def test_a_study_sweeps_every_layer_and_the_weighted_sum_from_one_extraction(tmp_path):
    from budget.report import build_report

    root = build_iemocap(tmp_path / "iemocap")
    model = tiny_encoder("wav2vec2", tmp_path / "w2v")
    config = StudyConfig(corpus="iemocap", root=str(root), features=(f"hf:{model}:all", f"hf:{model}:weighted"),
                         layers=("all",), heads=("mean_pool", "mlp_pool", "logreg"), per_class=(1, 2), seeds=1,
                         store=str(tmp_path / "store"), train=TrainConfig(steps=20, lr=1e-2, batch_size=4, device="cpu"))  # fmt: skip
    lines = []
    results = Study(config, tmp_path / "run").run(log=lines.append)
    layers = [f"hf:{model}:{i}" for i in range(4)]
    assert list(dict.fromkeys(results["features"])) == [*layers, f"hf:{model}:weighted"]
    assert [p.name for p in (tmp_path / "store").iterdir()] == [next((tmp_path / "store").iterdir()).name]  # one entry
    weighted = results[results["features"] == f"hf:{model}:weighted"]
    assert set(weighted["head"]) == {"mean_pool", "mlp_pool"}
    assert any("not trained on stacked layers: logreg on" in line for line in lines)
    learned = layer_weights(results)
    assert len(learned) == len(weighted) and np.allclose(learned[[f"layer{i}" for i in range(4)]].sum(axis=1), 1, atol=1e-4)
    assert results[results["features"] != f"hf:{model}:weighted"]["layer_weights"].isna().all()
    provenance = json.loads((tmp_path / "run" / "provenance.json").read_text())
    sweep = provenance["layer_sweeps"][f"hf:{model}:all"]
    assert sweep["default"] == f"hf:{model}:2" and sweep["weighted"] == f"hf:{model}:weighted"
    assert provenance["extraction_seconds_per_utterance"][layers[0]] > 0
    report = build_report(tmp_path / "run", tmp_path / "report")
    text = (report.parent / "report.md").read_text()
    assert "## Layers of w2v" in text and "Learned layer weights" in text and "## Paired comparisons at 2 per class" in text
    assert {"layers-w2v.png", "layer-weights-w2v-weighted.png"} <= {p.name for p in (report.parent / "figures").iterdir()}
