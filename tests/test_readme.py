"""The README's set-up commands are what CI runs; keep their shape."""

import re

import pytest
from conftest import REPO


def test_readme_opens_with_install_then_main_job_then_tests():
    blocks = re.findall(r"^```bash\n(.*?)\n```$", (REPO / "README.md").read_text(), flags=re.M | re.S)
    install, main_job = blocks[0].splitlines()
    test = blocks[1]
    assert "python3 -m venv" in install and "pip install torch==2.13.0" in install and "pip install -e" in install
    assert install.index("torch==2.13.0") < install.index("pip install -e")  # torch first: no CUDA wheels here
    assert main_job.startswith("budget curve")
    assert test == "pytest"


def test_the_readme_s_offline_main_job_runs_against_the_shared_folder(shared_dir, tmp_path):
    """The offline command, as written, names everything it needs under ``../shared``; run in a cheap form (two
    classes, a clip of each per speaker, one small size, no check) it trains both feature sets."""
    import shlex

    import pandas as pd
    from typer.testing import CliRunner

    from budget.cli import app

    offline = re.findall(r"^```bash\n(.*?)\n```$", (REPO / "README.md").read_text(), flags=re.M | re.S)[2]
    args = shlex.split(offline)
    assert args[:2] == ["budget", "curve"] and "--root" in args
    shared = [arg for arg in args if "../shared/" in arg]
    assert shared == ["lld,hf:../shared/models/whisper-tiny-en", "../shared/data/emodb"]
    for name in ("models/whisper-tiny-en", "data/emodb/wav"):
        if not (shared_dir / name).is_dir():
            pytest.skip(f"{shared_dir / name} is absent")
    wavs = sorted((shared_dir / "data" / "emodb" / "wav").glob("*.wav"))
    cheap = tmp_path / "emodb" / "wav"
    cheap.mkdir(parents=True)
    for speaker in sorted({wav.name[:2] for wav in wavs}):
        for emotion in "WN":  # anger and neutral
            for wav in [w for w in wavs if w.name[:2] == speaker and w.name[5] == emotion][:1]:
                (cheap / wav.name).symlink_to(wav)
    args = [arg.replace("../shared", str(shared_dir)) for arg in args]
    args[args.index("--root") + 1] = str(cheap.parent)
    result = CliRunner().invoke(app, [*args[1:], "--per-class", "2", "--seeds", "1", "--steps", "5",
                                      "--no-check-convergence", "--no-report", "--store", str(tmp_path / "store"),
                                      "--run-dir", str(tmp_path / "run")])  # fmt: skip
    assert result.exit_code == 0, result.output
    results = pd.read_csv(tmp_path / "run" / "results.csv")
    assert set(results["head"]) == {"mlp_pool"} and results["features"].nunique() == 2
    assert results["fold"].nunique() == 10
