"""``budget select``: a real pool ranked for annotators, and one line for every pool that cannot be ranked."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from conftest import write_wav
from corpus_builders import build_emodb, emodb_names
from typer.testing import CliRunner

import budget
from budget.cli import app
from budget.errors import BudgetError


def split_emodb(emodb: Path, folder: Path, labelled_speakers=("03", "08", "09", "10")) -> tuple[Path, Path]:
    """EmoDB's files as a labelled corpus of some speakers and, for the others, an unlabelled pool of bare audio."""
    labelled, pool = folder / "labelled", folder / "pool"
    (labelled / "wav").mkdir(parents=True)
    pool.mkdir()
    for i, wav in enumerate(sorted((emodb / "wav").glob("*.wav"))):
        target = labelled / "wav" / wav.name if wav.name[:2] in labelled_speakers else pool / f"clip-{i:03d}.wav"
        target.symlink_to(wav)
    return labelled, pool


@pytest.mark.parametrize("strategy", ["entropy", "kcenter"])
def test_a_pool_of_emodb_speakers_is_ranked_with_n_clips_of_the_pool_none_repeated(shared_emodb, emodb_lld_store,
                                                                                   tmp_path, strategy):  # fmt: skip
    labelled, pool = split_emodb(shared_emodb, tmp_path)
    result = CliRunner().invoke(app, ["select", "--labelled", str(labelled), "--pool", str(pool), "--n", "25",
                                      "--strategy", strategy, "-f", "lld", "-m", "logreg", "--store", str(emodb_lld_store),
                                      "--out", str(tmp_path / "next.csv")])  # fmt: skip
    assert result.exit_code == 0, result.output
    chosen = pd.read_csv(tmp_path / "next.csv")
    pool_files = {str(p) for p in pool.iterdir()}
    assert list(chosen["rank"]) == list(range(1, 26)) and chosen["path"].is_unique and set(chosen["path"]) <= pool_files
    assert set(chosen["predicted"]) <= {"neutral", "happy", "sad", "angry", "fearful", "disgust", "boredom"}
    assert chosen["probability"].between(0, 1).all() and (chosen["strategy"] == strategy).all()
    if strategy == "entropy":
        assert chosen["score"].is_monotonic_decreasing  # the most uncertain first


@pytest.fixture
def tiny(tmp_path) -> tuple[Path, Path]:
    labelled = build_emodb(tmp_path / "labelled", emodb_names(20))
    pool = tmp_path / "pool"
    for i in range(6):
        write_wav(pool / f"p{i}.wav", seconds=0.3, seed=100 + i)
    return labelled, pool


def _select(labelled, pool, tmp_path, n=3, **settings):
    return budget.select(labelled=labelled, pool=pool, n=n, features="lld", heads="logreg", store=tmp_path / "store",
                         log=lambda _: None, **settings)  # fmt: skip


def test_a_pool_that_repeats_labelled_audio_is_deduplicated_in_one_line(tiny, tmp_path):
    labelled, pool = tiny
    for wav in sorted((labelled / "wav").glob("*.wav"))[:2]:
        (pool / f"copy-{wav.name}").write_bytes(wav.read_bytes())
    lines = []
    chosen = budget.select(labelled=labelled, pool=pool, n=6, features="lld", heads="logreg", store=tmp_path / "store",
                           log=lines.append)  # fmt: skip
    assert "2 pool clip(s) are labelled already (the same audio) and are left out" in lines
    assert not chosen["path"].str.contains("copy-").any() and len(chosen) == 6


@pytest.mark.parametrize(
    ("make", "n", "message"),
    [
        (lambda pool: [p.unlink() for p in pool.iterdir()], 3, "holds no audio file"),
        (lambda pool: None, 7, "asked for 7 clips; the pool holds 6 that are not labelled"),
        (lambda pool: (pool / "table.csv").write_text("file\nx.wav\n"), 3, "needs a 'path' column"),
        (lambda pool: None, 0, "n must be an integer of at least 1"),
    ],
)  # fmt: skip
def test_a_pool_that_cannot_be_ranked_is_one_error(tiny, tmp_path, make, n, message):
    labelled, pool = tiny
    make(pool)
    target = pool / "table.csv" if (pool / "table.csv").exists() else pool
    with pytest.raises(BudgetError, match=message):
        _select(labelled, target, tmp_path, n=n)


def test_unreadable_pool_files_are_left_out_with_a_line_and_the_rest_ranked(tiny, tmp_path):
    labelled, pool = tiny
    (pool / "broken.wav").write_bytes(b"not audio" * 10)
    lines = []
    chosen = budget.select(labelled=labelled, pool=pool, n=6, features="lld", heads="logreg", store=tmp_path / "store",
                           strategy="margin", log=lines.append)  # fmt: skip
    assert any(line.startswith("1 pool file(s) cannot be used and are left out") for line in lines)
    assert len(chosen) == 6 and not chosen["path"].str.endswith("broken.wav").any()
    with pytest.raises(BudgetError, match="which an unlabelled pool does not have"):
        _select(labelled, pool, tmp_path, strategy="balanced")
