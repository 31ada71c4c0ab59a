"""The feature store: cache hits, resume after interruption, invalidation, atomicity, float16 bounds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import write_wav
from feature_helpers import CountingExtractor
from tolerances import assert_float_close

from budget.audio import load_audio
from budget.engine.config import TrainConfig
from budget.engine.packed import DeviceFeatures, prepared_inputs
from budget.errors import BudgetError
from budget.features import FeatureStore
from budget.features.base import length_batches
from budget.features.entries import EntrySettings
from budget.features.featureset import MappedFrames
from budget.heads import MeanPool, MLPPool


def make_corpus(folder: Path, n: int = 20) -> pd.DataFrame:
    rows = []
    for i in range(n):
        path = write_wav(folder / f"u{i:02d}.wav", seconds=0.2 + 0.05 * (i % 7), seed=i)
        rows.append({"utt_id": f"u{i:02d}", "path": str(path), "label": "happy", "speaker": "s", "group": "g", "text": ""})
    return pd.DataFrame(rows)


@pytest.fixture
def corpus(tmp_path) -> pd.DataFrame:
    return make_corpus(tmp_path / "audio")


def test_extract_then_load_returns_the_extractor_output_in_manifest_order(tmp_path, corpus):
    store = FeatureStore(tmp_path / "store")
    extractor = CountingExtractor()
    report = store.extract(extractor, corpus, batch_size=4)
    assert (report.extracted, report.cached, len(report.failures)) == (20, 0, 0)
    shuffled = corpus.sample(frac=1.0, random_state=1)
    features = store.load(extractor, shuffled)
    assert list(features.utt_ids) == list(shuffled["utt_id"])
    for i, path in enumerate(shuffled["path"]):
        expected = extractor.frames(load_audio(path))
        # float16 rounding to nearest: half an ulp (2**-11 relative), 2**-25 absolute among subnormals
        np.testing.assert_allclose(features.sequence(i), expected, rtol=2**-11, atol=2**-25)
        # pooled in float32 before rounding: one reduction over the frames
        assert_float_close(features.mean[i], expected.mean(0), depth=1)
        np.testing.assert_array_equal(features.max[i], expected.max(0))  # a max rounds nothing
    assert features.frames.dtype == np.float16


def test_second_run_is_a_cache_hit_with_no_extractor_work(tmp_path, corpus):
    store = FeatureStore(tmp_path / "store")
    store.extract(CountingExtractor(), corpus)
    again = CountingExtractor()
    report = store.extract(again, corpus)
    assert (report.extracted, report.cached, again.calls) == (0, 20, 0)


def test_interrupted_extraction_resumes_where_it_stopped(tmp_path, corpus):
    store = FeatureStore(tmp_path / "store")
    with pytest.raises(KeyboardInterrupt):
        store.extract(CountingExtractor(fail_on_call=3), corpus, batch_size=4)
    # the two batches of 4 held before the interrupt were committed as it stopped
    resumed = CountingExtractor()
    report = store.extract(resumed, corpus, batch_size=4)
    assert (report.cached, report.extracted, resumed.utterances) == (8, 12, 12)
    assert len(store.load(resumed, corpus)) == 20


def test_killed_extraction_leaves_only_whole_shards_and_resumes(tmp_path, corpus):
    corpus.to_csv(tmp_path / "corpus.csv", index=False)
    script = textwrap.dedent(
        f"""
        import sys, pandas as pd
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from feature_helpers import CountingExtractor
        from budget.features import FeatureStore, store
        store.SHARD_UTTERANCES = 2  # a shard a batch
        FeatureStore({str(tmp_path / "store")!r}).extract(
            CountingExtractor(sleep=0.4), pd.read_csv({str(tmp_path / "corpus.csv")!r}, keep_default_na=False), batch_size=2
        )
        """
    )
    process = subprocess.Popen([sys.executable, "-c", script])
    shards = tmp_path / "store"
    deadline = time.time() + 60
    while time.time() < deadline and len(list(shards.rglob("*.index.parquet"))) < 2:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    committed = len(list(shards.rglob("*.index.parquet")))
    assert 2 <= committed < 10, "the kill should land mid-extraction"
    store = FeatureStore(shards)
    partial = store.load(CountingExtractor(), corpus)
    assert len(partial) == 2 * committed and len(partial.missing) == 20 - 2 * committed
    resumed = CountingExtractor()
    report = store.extract(resumed, corpus, batch_size=2)
    assert report.extracted == 20 - 2 * committed and resumed.utterances == report.extracted
    assert not [p for p in shards.rglob("*") if p.name.endswith(".tmp")]
    assert len(store.load(resumed, corpus)) == 20


@pytest.mark.parametrize(("setting", "value", "sizes"), [("SHARD_UTTERANCES", 8, [9, 9, 2]), ("SHARD_SECONDS", 0.0, [3] * 6 + [2]),
                                                        ("SHARD_BYTES", 1, [3] * 6 + [2])])  # fmt: skip
def test_a_shard_holds_batches_until_it_is_full(tmp_path, corpus, monkeypatch, setting, value, sizes):
    """Batches of 3 fill a shard until it holds SHARD_UTTERANCES; a shard is also committed once SHARD_SECONDS have
    passed or its frames reach SHARD_BYTES, and at the end; reading them back gives every utterance."""
    monkeypatch.setattr(f"budget.features.store.{setting}", value)
    store = FeatureStore(tmp_path / "store")
    report = store.extract(CountingExtractor(), corpus, batch_size=3)
    held = sorted(len(pd.read_parquet(index)) for index in (report.entry / "shards").glob("*.index.parquet"))
    assert held == sorted(sizes)
    features = store.load(CountingExtractor(), corpus)
    assert len(features) == 20 and not features.missing


def test_changed_setting_is_a_new_entry(tmp_path, corpus):
    store = FeatureStore(tmp_path / "store")
    store.extract(CountingExtractor(), corpus)
    for kwargs, extractor in (
        ({"max_seconds": 0.25}, CountingExtractor()),
        ({}, CountingExtractor(scale=2.0)),
        ({"frame_dtype": "float32"}, CountingExtractor()),
    ):
        report = store.extract(extractor, corpus, EntrySettings(**kwargs))
        assert report.extracted == 20, kwargs
    cropped = store.load(CountingExtractor(), corpus, EntrySettings(max_seconds=0.25))
    assert cropped.lengths.max() == 25  # 0.25 s at 160 samples a frame
    assert len(store.summary()) == 4


def test_changed_audio_file_invalidates_exactly_that_file(tmp_path, corpus):
    store = FeatureStore(tmp_path / "store")
    store.extract(CountingExtractor(), corpus)
    changed = Path(corpus["path"].iloc[5])
    time.sleep(0.01)
    write_wav(changed, seconds=0.6, seed=99)
    again = CountingExtractor()
    report = store.extract(again, corpus)
    assert (report.extracted, again.utterances) == (1, 1)
    features = store.load(again, corpus)
    assert features.lengths[5] == 60  # the new 0.6 s file, not the stale one
    (listed,) = store.summary().itertuples()
    assert (listed.utterances, listed.identity) == (20, "content")  # the superseded version is not counted


@pytest.mark.parametrize(("identity", "served_stale"), [("content", False), ("stat", True)])
def test_other_audio_of_the_same_size_and_date_is_extracted_again_by_default(tmp_path, corpus, identity, served_stale):
    """`cp` then `touch -r`: the default (content) identity sees the new audio; the stat opt-in cannot."""
    import os

    store = FeatureStore(tmp_path / "store")
    store.extract(CountingExtractor(), corpus, EntrySettings(file_identity=identity))
    import soundfile as sf

    target = Path(corpus["path"].iloc[5])
    kept = target.stat()
    samples, rate = sf.read(target, dtype="int16")
    sf.write(target, samples[::-1].copy(), rate, subtype="PCM_16")  # other audio: the same samples reversed
    os.utime(target, ns=(kept.st_atime_ns, kept.st_mtime_ns))
    assert target.stat().st_size == kept.st_size and target.stat().st_mtime_ns == kept.st_mtime_ns
    again = CountingExtractor()
    report = store.extract(again, corpus, EntrySettings(file_identity=identity))
    assert (report.extracted == 0) is served_stale and again.utterances == (0 if served_stale else 1)


def test_content_identity_survives_a_copy(tmp_path, corpus):
    store = FeatureStore(tmp_path / "store")
    store.extract(CountingExtractor(), corpus, EntrySettings(file_identity="content"))
    moved = corpus.copy()
    moved["path"] = [str(Path(p).rename(Path(p).with_name("moved_" + Path(p).name))) for p in corpus["path"]]
    report = store.extract(CountingExtractor(), moved, EntrySettings(file_identity="content"))
    assert report.cached == 20


def test_bad_audio_is_recorded_and_skipped(tmp_path, corpus):
    Path(corpus["path"].iloc[3]).write_bytes(b"garbage" * 50)
    Path(corpus["path"].iloc[7]).unlink()
    store = FeatureStore(tmp_path / "store")
    report = store.extract(CountingExtractor(), corpus)
    assert sorted(report.failures["utt_id"]) == ["u03", "u07"]
    features = store.load(CountingExtractor(), corpus)
    assert len(features) == 18 and sorted(features.missing) == ["u03", "u07"]
    assert set(store.failures(report.entry.name)["utt_id"]) == {"u03", "u07"}


def test_a_run_counts_its_own_work_never_earlier_failures(tmp_path, corpus):
    Path(corpus["path"].iloc[3]).write_bytes(b"garbage" * 50)
    store = FeatureStore(tmp_path / "store")
    first, second = store.extract(CountingExtractor(), corpus), store.extract(CountingExtractor(), corpus)
    assert (first.extracted, len(first.failures)) == (19, 1)
    assert (second.cached, second.extracted, len(second.failures)) == (20, 0, 1)  # the failure is earlier work


def test_load_before_extract_is_a_clear_error(tmp_path, corpus):
    with pytest.raises(BudgetError, match="run `budget extract` first"):
        FeatureStore(tmp_path / "store").load(CountingExtractor(), corpus)


def test_float16_error_bound():
    rng = np.random.default_rng(0)
    values = np.concatenate(
        [rng.standard_normal(10_000) * scale for scale in (1e-7, 1e-5, 1e-3, 1.0, 1e2, 6e4 / 4)]
    ).astype(np.float32)
    rounded = values.astype(np.float16).astype(np.float32)
    bound = np.maximum(np.abs(values) * 2.0**-11, 2.0**-25)
    assert (np.abs(rounded - values) <= bound).all()


def test_values_beyond_float16_are_refused(tmp_path, corpus):
    with pytest.raises(BudgetError, match="float16 range"):
        FeatureStore(tmp_path / "store").extract(CountingExtractor(scale=1e6), corpus)
    report = FeatureStore(tmp_path / "store").extract(CountingExtractor(scale=1e6), corpus, EntrySettings(frame_dtype="float32"))
    assert report.extracted == 20


def test_length_batches():
    lengths = [5, 9, 9, 3, 9, 5, 1]
    batches = length_batches(lengths, max_items=2, max_total=100, exact=False)
    assert sorted(i for b in batches for i in b) == list(range(7))
    assert all(len(b) <= 2 for b in batches)
    assert batches[0] == [1, 2]  # longest first
    exact = length_batches(lengths, max_items=8, max_total=100, exact=True)
    assert all(len({lengths[i] for i in b}) == 1 for b in exact)
    assert length_batches([10, 10, 10], max_items=8, max_total=25, exact=False) == [[0, 1], [2]]


class OutOfMemoryOnce(CountingExtractor):
    """An extractor whose first ``failing`` calls raise as CUDA does when it runs out of memory."""

    def __init__(self, failing: int):
        super().__init__()
        self.failing = failing

    def _extract(self, inputs):
        if self.calls < self.failing:
            self.calls += 1
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super()._extract(inputs)


def test_utterances_the_extractor_failed_on_are_retried_on_the_next_run(tmp_path, corpus):
    store = FeatureStore(tmp_path / "store")
    first = store.extract(OutOfMemoryOnce(failing=10**6), corpus, batch_size=4)
    assert (first.extracted, len(first.failures)) == (0, 20)
    assert first.failures["reason"].str.contains("out of memory").all()
    with pytest.raises(BudgetError, match="every utterance failed extraction for counting .*out of memory.*retried"):
        store.load(CountingExtractor(), corpus)
    (listed,) = store.summary().itertuples()  # listed with its failures, not an empty store
    assert (listed.utterances, listed.failures, listed.frame_shape) == (0, 20, "-")
    again = store.extract(CountingExtractor(), corpus, batch_size=4)
    assert (again.cached, again.extracted, len(again.failures)) == (0, 20, 0)
    assert len(store.load(CountingExtractor(), corpus)) == 20


class RecordsHandledErrors(OutOfMemoryOnce):
    """Notes, per call after the failing ones, whether an exception was still being handled."""

    def __init__(self, failing: int):
        super().__init__(failing)
        self.handling: list[bool] = []

    def _extract(self, inputs):
        if self.calls >= self.failing:
            self.handling.append(sys.exc_info()[0] is not None)
        return super()._extract(inputs)


def test_a_failed_batch_is_retried_one_by_one_once_its_error_is_released(tmp_path, corpus):
    # Inside the handler, the error's traceback keeps the failed batch's tensors (on CUDA: the memory the
    # one-by-one retries need) alive.
    extractor = RecordsHandledErrors(failing=1)
    report = FeatureStore(tmp_path / "store").extract(extractor, corpus, batch_size=4)
    assert (report.extracted, len(report.failures)) == (20, 0)
    assert len(extractor.handling) > 4 and not any(extractor.handling)


def test_audio_that_cannot_be_used_is_not_retried_until_the_file_changes(tmp_path, corpus):
    Path(corpus["path"].iloc[3]).write_bytes(b"garbage" * 50)
    store = FeatureStore(tmp_path / "store")
    store.extract(CountingExtractor(), corpus)
    again = CountingExtractor()
    report = store.extract(again, corpus)
    assert (again.calls, report.cached, len(report.failures)) == (0, 20, 1)


def test_studies_that_find_everything_stored_share_the_store_with_a_writer(tmp_path, corpus, monkeypatch):
    """Reading needs no lock: a second reader, even beside a held writer's lock, is served."""
    import fcntl

    monkeypatch.setattr("budget.features.entries.WRITER_WAIT_SECONDS", 0.2)

    store = FeatureStore(tmp_path / "store")
    report = store.extract(CountingExtractor(), corpus)
    with (report.entry / ".lock").open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another process extracting into this entry
        reader = CountingExtractor()
        assert store.extract(reader, corpus).cached == 20 and reader.calls == 0
        assert len(store.load(reader, corpus)) == 20
        with pytest.raises(BudgetError, match="another extraction is writing"):
            store.extract(CountingExtractor(), make_corpus(tmp_path / "more", n=21))  # new work still needs the lock


def test_a_second_extraction_waits_for_the_writer_then_extracts_only_what_it_left(tmp_path, corpus, capsys):
    import fcntl
    import threading

    store = FeatureStore(tmp_path / "store")
    entry = store.extract(CountingExtractor(), corpus.iloc[:10]).entry
    held = (entry / ".lock").open("w")
    fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another process extracting into this entry
    threading.Timer(0.5, held.close).start()  # ... that finishes half a second later
    second = CountingExtractor()
    report = store.extract(second, corpus)
    assert (report.cached, report.extracted, second.utterances) == (10, 10, 10)
    waited = capsys.readouterr().err
    assert "another extraction is writing" in waited and "waiting for it" in waited


@pytest.mark.parametrize("part", ["frames.npy", "mean.npy", "index.parquet"])
def test_a_shard_cut_short_is_extracted_again_not_served(tmp_path, corpus, part, monkeypatch):
    monkeypatch.setattr("budget.features.store.SHARD_UTTERANCES", 4)
    store = FeatureStore(tmp_path / "store")
    report = store.extract(CountingExtractor(), corpus, batch_size=4)
    shard = sorted((report.entry / "shards").glob(f"*.{part}"))[1]
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    again = CountingExtractor()
    redone = store.extract(again, corpus, batch_size=4)
    assert (redone.cached, redone.extracted, again.utterances) == (16, 4, 4)
    features = store.load(again, corpus)
    assert len(features) == 20 and not features.missing


def test_no_crop_is_0_or_none_alike():
    from budget.features.entries import EntrySettings

    assert EntrySettings(0).max_seconds is None and EntrySettings(0) == EntrySettings(None)


def test_an_entry_s_settings_are_one_value_checked_where_it_is_made(tmp_path, corpus):
    store = FeatureStore(tmp_path / "store")
    for bad, message in (({"max_seconds": -1}, "max_seconds must be a number of at least 0"),
                         ({"frame_dtype": "int8"}, "frame_dtype must be one of"), ({"file_identity": "name"}, "file_identity")):  # fmt: skip
        with pytest.raises(BudgetError, match=message):
            EntrySettings(**bad)
    settings = EntrySettings(max_seconds=2.0, frame_dtype="float32")
    assert settings.identity(CountingExtractor())["audio"]["max_seconds"] == 2.0
    assert settings.entry(store.root, CountingExtractor()).folder != EntrySettings().entry(store.root, CountingExtractor()).folder
    report = store.extract(CountingExtractor(), corpus, settings)
    assert report.entry == settings.entry(store.root, CountingExtractor()).folder  # what extraction wrote is what loading reads


class LayeredExtractor(CountingExtractor):
    """Every frame as ``n_layers`` hidden states of ``width``, layer ``k`` the counting frame times ``k + 1``: an
    ``:all`` entry."""

    def __init__(self, n_layers: int = 12, width: int = 1024):
        super().__init__()
        self.n_layers, self.width = n_layers, width

    def identity(self):
        return {**super().identity(), "layers": self.n_layers, "width": self.width}

    def layer_names(self):
        return [f"layer{k}" for k in range(self.n_layers)]

    def frames(self, wave: np.ndarray) -> np.ndarray:
        base = np.resize(super().frames(wave), (len(wave) // 160, self.width))
        return np.stack([(k + 1) * base for k in range(self.n_layers)], axis=1)


def test_one_layer_of_an_all_entry_is_read_alone_and_statistics_without_frames(tmp_path, corpus):

    store, extractor = FeatureStore(tmp_path / "store"), LayeredExtractor()
    store.extract(extractor, corpus, batch_size=8)
    every = store.load(extractor, corpus)
    tracemalloc.start()
    one = store.load(extractor, corpus, layer=5)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    np.testing.assert_array_equal(one.frames, every.frames[:, 5])
    np.testing.assert_array_equal(one.mean, every.mean[:, 5])
    np.testing.assert_array_equal(one.max, every.max[:, 5])
    assert one.layer_names is None and one.dim == extractor.width
    assert peak < 3 * one.frames.nbytes < every.frames.nbytes / 3  # the layer's frames, never all twelve
    for layer, loaded in ((None, every), (5, one)):  # what a study's memory guard reads, from the index alone
        footprint = store.footprint(extractor, corpus, layer=layer)
        assert (footprint.utterances, footprint.frames) == (len(loaded), len(loaded.frames))
        assert footprint.width * footprint.itemsize * footprint.frames == loaded.frames.nbytes
    for layer, loaded in ((None, every), (5, one)):  # left in the files, read by position: the same frames
        mapped = store.load(extractor, corpus.iloc[::-1], layer=layer, mapped=True)
        assert isinstance(mapped.frames, MappedFrames) and mapped.frames.shape == loaded.frames.shape
        np.testing.assert_array_equal(mapped.frames[:], loaded.select(corpus["utt_id"].iloc[::-1]).frames)
    pooled = store.load(extractor, corpus, layer=5, frames=False)
    assert pooled.frames is None and pooled.dim == one.dim
    for name in ("lengths", "offsets", "mean", "max", "utt_ids"):
        np.testing.assert_array_equal(getattr(pooled, name), getattr(one, name))
    assert pooled.select(corpus["utt_id"][:3]).frames is None
    with pytest.raises(BudgetError, match="without frames"):
        pooled.sequence(0)
    uploaded = DeviceFeatures.upload(pooled, torch.device("cpu"))
    assert prepared_inputs(MeanPool, uploaded, TrainConfig()) is uploaded  # a pooled head reads the statistics
    with pytest.raises(BudgetError, match="mlp_pool: these features were loaded without frames"):
        prepared_inputs(MLPPool, uploaded, TrainConfig())
