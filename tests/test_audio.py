"""Audio loading: mono, 16 kHz, cropped, and a clear error for every kind of bad file."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from conftest import write_wav
from tolerances import assert_float_close

from budget.audio import SAMPLE_RATE, load_audio, scan_audio
from budget.errors import AudioError, BudgetError


def test_stereo_48k_becomes_mono_16k(tmp_path):
    path = write_wav(tmp_path / "a.wav", seconds=1.0, sample_rate=48_000, channels=2)
    wave = load_audio(path)
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert len(wave) == 16_000
    stereo, _ = sf.read(path, dtype="float32")
    # the mean of the channels, resampled: the same RMS within the resampler's passband ripple and the tone's
    # edges (1%, a property of the filter, not of the CPU)
    assert np.sqrt(np.mean(wave**2)) == pytest.approx(np.sqrt(np.mean(stereo.mean(axis=1) ** 2)), rel=0.01)


def test_crop_keeps_the_first_seconds(tmp_path):
    path = write_wav(tmp_path / "long.wav", seconds=7.0, sample_rate=22_050)
    assert len(load_audio(path, max_seconds=5.0)) == 80_000
    assert len(load_audio(path, max_seconds=None)) == 112_000
    full = load_audio(path, max_seconds=None)
    # soxr resamples the cropped and the whole file alike away from the crop's edge: the same samples up to
    # the resampler's float32 filter arithmetic (a few hundred taps, one reduction)
    assert_float_close(load_audio(path, max_seconds=5.0)[:70_000], full[:70_000], depth=1)


def test_16k_input_is_not_touched(tmp_path):
    path = write_wav(tmp_path / "a.wav", seconds=0.5)
    expected, _ = sf.read(path, dtype="float32")
    np.testing.assert_array_equal(load_audio(path), expected)


@pytest.fixture
def bad_files(tmp_path):
    """One file of each kind of problem, and one good file."""
    files = {"good": write_wav(tmp_path / "good.wav")}
    files["missing"] = tmp_path / "missing.wav"
    files["empty"] = tmp_path / "empty.wav"
    files["empty"].write_bytes(b"")
    files["corrupt"] = tmp_path / "corrupt.wav"
    files["corrupt"].write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk" + bytes(range(256)))
    files["no_samples"] = tmp_path / "no_samples.wav"
    sf.write(files["no_samples"], np.zeros((0, 1), dtype=np.float32), 16_000)
    files["too_short"] = write_wav(tmp_path / "short.wav", seconds=0.01)
    return files


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("missing", "file not found"),
        ("empty", "empty file"),
        ("corrupt", "unreadable or corrupt"),
        ("no_samples", "no audio samples"),
        ("too_short", "too short: 0.010 s"),
    ],
)
def test_bad_files_raise_an_error_naming_the_file(bad_files, kind, reason):
    with pytest.raises(AudioError, match=reason) as caught:
        load_audio(bad_files[kind])
    assert caught.value.path == str(bad_files[kind])


def test_scan_reports_every_bad_file_and_keeps_the_good(bad_files):
    manifest = pd.DataFrame(
        {"utt_id": list(bad_files), "path": [str(p) for p in bad_files.values()], "label": "happy"}
    )
    scan = scan_audio(manifest)
    assert list(scan.usable["utt_id"]) == ["good"]
    assert scan.usable["duration"].iloc[0] == pytest.approx(0.3)
    assert scan.usable["sample_rate"].iloc[0] == 16_000
    assert sorted(scan.problems["utt_id"]) == sorted(set(bad_files) - {"good"})
    with pytest.raises(BudgetError, match="5 bad audio file"):
        scan.raise_if_problems()


def test_a_wav_cut_short_is_refused_not_read_as_a_shorter_clip(tmp_path):
    path = write_wav(tmp_path / "whole.wav", seconds=1.0)
    data = path.read_bytes()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(data[: len(data) // 2])
    assert len(load_audio(path)) == SAMPLE_RATE
    with pytest.raises(AudioError, match="truncated: its header declares"):
        load_audio(cut)
