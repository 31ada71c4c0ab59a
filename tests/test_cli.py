"""The ``budget corpus`` commands, end to end through Typer."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import write_wav
from corpus_builders import build_emodb, build_iemocap, emodb_names
from typer.testing import CliRunner

from budget import corpora
from budget.cli import app
from budget.results import stored

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_info_on_real_emodb(shared_emodb):
    result = invoke("corpus", "info", "--corpus", "emodb", "--root", str(shared_emodb))
    assert result.exit_code == 0, result.output
    assert "535 utterances, 7 classes, 10 speakers, 10 groups (leave-one-group-out)" in result.output
    last_row = [line for line in result.output.splitlines() if re.search(r"\ball\b", line)][-1]
    assert [int(n) for n in re.findall(r"\d+", last_row)] == [79, 71, 62, 127, 69, 46, 81, 535]
    assert "35 per class" in result.output


def test_info_with_four_classes_on_real_emodb(shared_emodb):
    result = invoke("corpus", "info", "--root", str(shared_emodb), "--classes", "neutral,happy,sad,angry")
    assert result.exit_code == 0, result.output
    assert "339 utterances, 4 classes" in result.output


def test_info_reads_root_from_data_dir_and_saves_manifest(tmp_path, isolated_data_dir):
    build_iemocap(isolated_data_dir / "iemocap")
    out = tmp_path / "manifest.csv"
    result = invoke("corpus", "info", "--corpus", "iemocap", "--save-manifest", str(out))
    assert result.exit_code == 0, result.output
    assert "40 utterances, 4 classes, 10 speakers, 5 groups" in result.output
    saved = pd.read_csv(out)
    assert {"fold", "duration", "text"} <= set(saved.columns)
    assert saved.groupby("group")["fold"].nunique().max() == 1


def test_bad_files_are_reported_and_left_out_or_fatal_with_strict(tmp_path):
    build_emodb(tmp_path, emodb_names(40))
    (tmp_path / "wav" / "03a01Wa.wav").write_bytes(b"")
    (tmp_path / "wav" / "03a01La.wav").write_bytes(b"not audio at all" * 10)
    result = invoke("corpus", "info", "--root", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert "38 utterances" in result.output
    assert "2 bad audio file(s), left out" in result.output
    assert "03a01Wa.wav" in result.output and "empty file" in result.output
    strict = invoke("corpus", "info", "--root", str(tmp_path), "--strict")
    assert strict.exit_code == 2
    assert "2 bad audio file(s)" in strict.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("corpus", "info", "--corpus", "timit"), "unknown corpus 'timit'"),
        (("corpus", "info", "--corpus", "iemocap"), "iemocap: not found at"),
        (("corpus", "info", "--root", "/nonexistent/emodb"), "does not exist"),
        (("corpus", "fetch", "ravdess"), "not free to redistribute"),
        (("curve", "--modle", "mlp_pool"), "No such option: --modle (Possible options: --fold-file, --model, --models)"),
        (("curve", "--seeds"), "Option '--seeds' requires an argument"),
        (("curve", "--seeds", "three"), "Invalid value for '--seeds'"),
        (("frobnicate",), "No such command 'frobnicate'; see `"),
    ],
)
def test_errors_are_one_line_without_traceback(args, message):
    result = invoke(*args)
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert "Traceback" not in result.output


def test_default_corpus_is_fetched_when_missing(tmp_path, monkeypatch, isolated_data_dir):
    """With no EmoDB in the data folder, the default command fetches it (here from a local archive)."""
    import shutil

    source = build_emodb(tmp_path / "src", emodb_names(535))
    archive = shutil.make_archive(str(tmp_path / "emodb"), "zip", source)
    adapter = dataclasses.replace(corpora.CORPORA["emodb"], url=f"file://{archive}", pinned_files=None)  # synthetic audio
    monkeypatch.setitem(corpora.CORPORA, "emodb", adapter)
    result = invoke("corpus", "info")
    assert result.exit_code == 0, result.output
    assert "fetching it" in result.output
    assert "535 utterances" in result.output
    assert (isolated_data_dir / "emodb" / "wav").is_dir()


def test_corpus_list_names_every_adapter():
    result = invoke("corpus", "list")
    assert result.exit_code == 0
    for name in corpora.CORPORA:
        assert name in result.output


def test_extract_then_features_then_cache_hit(tmp_path):
    build_emodb(tmp_path / "emodb", emodb_names(24))
    (tmp_path / "emodb" / "wav" / "03a01Wa.wav").write_bytes(b"")
    store = str(tmp_path / "store")
    args = ("extract", "--root", str(tmp_path / "emodb"), "--features", "lld", "--store", store)
    first = invoke(*args)
    assert first.exit_code == 0, first.output
    assert "lld (cpu, fp32): 23 utterances, 0 already stored, 23 extracted" in first.output
    assert "1 bad audio file(s), left out" in first.output
    second = invoke(*args)
    assert "23 already stored, 0 extracted" in second.output
    listing = invoke("features", "--store", store)
    assert listing.exit_code == 0
    row = next(line for line in listing.output.splitlines() if "lld" in line)
    cells = [cell.strip() for cell in row.split("│") if cell.strip()]
    assert cells[1:5] == ["34", "1", "5.0", "23"]  # frame width, layers, crop, utterances


def _read_only(*args, **kwargs):
    import errno

    raise OSError(errno.EROFS, "Read-only file system")


def test_extract_into_a_read_only_store_is_one_error_line(tmp_path, monkeypatch):
    """Tests run as root, so the disk's refusal is simulated; a store that already holds the features is still read."""
    build_emodb(tmp_path / "emodb", emodb_names(4))
    args = ("extract", "--root", str(tmp_path / "emodb"), "--features", "lld", "--store", str(tmp_path / "store"))
    monkeypatch.setattr(Path, "mkdir", _read_only)
    refused = invoke(*args)
    lines = [line for line in refused.output.splitlines() if line.strip()]
    assert refused.exit_code == 2 and len(lines) == 1, refused.output
    assert lines[0].startswith("error: cannot create the folder") and "Read-only file system" in lines[0]
    monkeypatch.undo()
    assert invoke(*args).exit_code == 0
    monkeypatch.setattr(Path, "mkdir", _read_only)
    assert "4 already stored, 0 extracted" in invoke(*args).output


def test_a_report_into_a_read_only_folder_is_one_error_line(tmp_path, monkeypatch):
    from analysis_helpers import synthetic_results

    run = tmp_path / "run"
    run.mkdir()
    stored(synthetic_results(sizes=(10, 20), folds=4, seeds=1)).to_parquet(run / "results.parquet")
    monkeypatch.setattr(Path, "mkdir", _read_only)
    result = invoke("report", str(run), "--out", str(tmp_path / "out"))
    assert result.exit_code == 2 and result.output.startswith("error: cannot create the folder"), result.output
    assert len(result.output.strip().splitlines()) == 1


def test_extract_errors_are_one_line(tmp_path):
    result = invoke("extract", "--features", "mfcc", "--root", str(tmp_path))
    assert result.exit_code == 2 and result.output.startswith("error: bad feature spec 'mfcc'")


@pytest.mark.parametrize(
    ("option", "message"),
    [(("--max-seconds", "-1"), "max_seconds must be a number of at least 0; got -1"),
     (("--max-seconds", "nan"), "max_seconds must be a finite number of at least 0; got nan"),
     (("--max-seconds", "inf"), "max_seconds must be a finite number of at least 0; got inf"),
     (("--extract-batch", "-5"), "extract_batch must be an integer of at least 1; got -5"),
     (("--extract-batch", "0"), "extract_batch must be an integer of at least 1; got 0"),
     (("--identity", "name"), "file_identity must be one of content, stat; got 'name'")],
)  # fmt: skip
def test_extract_refuses_a_bad_crop_batch_size_or_identity_before_writing(tmp_path, option, message):
    build_emodb(tmp_path / "emodb", emodb_names(4))
    result = invoke("extract", "--root", str(tmp_path / "emodb"), "--features", "lld", "--store", str(tmp_path / "store"), *option)
    lines = [line for line in result.output.splitlines() if line.strip() and "bad audio" not in line]
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert not list((tmp_path / "store").rglob("*.npy"))


def test_content_identity_is_offered_and_listed(tmp_path):
    build_emodb(tmp_path / "emodb", emodb_names(4))
    store = str(tmp_path / "store")
    assert invoke("extract", "--root", str(tmp_path / "emodb"), "--features", "lld", "--store", store, "--identity", "content").exit_code == 0
    assert "content" in invoke("features", "--store", store).output


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_gpu_is_a_clear_error(tmp_path):
    result = invoke("extract", "--features", "lld", "--device", "cuda", "--root", str(tmp_path))
    assert result.exit_code == 2
    assert "torch sees no CUDA device" in result.output


def test_piped_tables_never_cut_an_identifier(tmp_path):
    from feature_helpers import CountingExtractor
    from test_store import make_corpus

    from budget.features import FeatureStore

    extractor = CountingExtractor()
    extractor.spec = "hf:/a/very/long/path/to/a/model/folder/that/does/not/fit/in/eighty/columns/whisper-tiny-en"
    FeatureStore(tmp_path / "store").extract(extractor, make_corpus(tmp_path / "audio", n=3))
    result = CliRunner().invoke(app, ["features", "--store", str(tmp_path / "store")])
    assert result.exit_code == 0 and extractor.spec in result.output


@pytest.mark.parametrize("checkpoint", ["junk", "hostile"])
def test_a_wav2vec_checkpoint_that_cannot_load_is_one_error_before_any_utterance(tmp_path, checkpoint):
    import os

    build_emodb(tmp_path / "emodb", emodb_names(4))
    marker = tmp_path / "payload-ran"
    if checkpoint == "junk":
        (tmp_path / "model.pt").write_bytes(b"these are not weights" * 20)
    else:
        class Hostile:
            def __reduce__(self):
                return os.system, (f"touch {marker}",)

        torch.save({"args": {"arch": "wav2vec"}, "model": {}, "extra_state": Hostile()}, tmp_path / "model.pt")
    result = invoke("extract", "--root", str(tmp_path / "emodb"), "-f", f"wav2vec1:{tmp_path / 'model.pt'}",
                    "--store", str(tmp_path / "store"))  # fmt: skip
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert ("refused wav2vec checkpoint" if checkpoint == "hostile" else "cannot read wav2vec checkpoint") in lines[0]
    assert not marker.exists()
    assert not (tmp_path / "store").exists()  # no entry, no utterance recorded as failed


def _nan_silent_and_short(root: Path) -> Path:
    """An EmoDB folder of 8 good files, one of NaN samples, one silent and one of 0.05 s."""
    import numpy as np
    import soundfile as sf

    build_emodb(root, emodb_names(11)[:8])
    names = emodb_names(11)[8:]
    nan = np.full(8_000, np.nan, dtype=np.float32)
    sf.write(root / "wav" / names[0], nan, 16_000, subtype="FLOAT")
    sf.write(root / "wav" / names[1], np.zeros(8_000, dtype=np.float32), 16_000, subtype="PCM_16")
    write_wav(root / "wav" / names[2], seconds=0.05)
    return root


def test_nan_silent_and_very_short_audio_is_named_and_refused_under_strict(tmp_path):
    root = _nan_silent_and_short(tmp_path / "emodb")
    info = invoke("corpus", "info", "--root", str(root))
    assert info.exit_code == 0 and "10 utterances" in info.output, info.output
    assert "1 bad audio file(s), left out" in info.output and "NaN or infinite samples" in info.output
    assert "2 file(s) worth a look, kept (" in info.output and "1 silent" in info.output and "1 very short" in info.output
    assert "0 (digital silence)" in info.output and "very short: 0.050 s" in info.output
    store = str(tmp_path / "store")
    for command in (("extract", "-f", "lld", "--store", store), ("curve", "-m", "logreg", "-f", "lld", "--store", store,
                                                                  "--per-class", "1", "--run-dir", str(tmp_path / "run"))):  # fmt: skip
        strict = invoke(*command, "--root", str(root), "--strict")
        assert strict.exit_code == 2, strict.output
        assert strict.output.startswith("error: 3 bad audio file(s) under --strict") and "NaN" in strict.output
        assert "silent" in strict.output and "very short" in strict.output
    assert not (tmp_path / "store").exists() and not (tmp_path / "run").exists()

