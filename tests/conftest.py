"""Shared fixtures: audio writers and the path of the read-only ../shared material."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]


def write_wav(path: Path, seconds: float = 0.3, sample_rate: int = 16_000, channels: int = 1, seed: int = 0) -> Path:
    """Write a short noisy tone, creating folders as needed."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sample_rate))
    t = np.arange(n) / sample_rate
    mono = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.01 * rng.standard_normal(n)
    data = np.stack([mono * (0.5 + 0.5 * c) for c in range(channels)], axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, data.astype(np.float32), sample_rate, subtype="PCM_16")
    return path


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """``$BUDGET_SHARED_DIR`` or ``../shared`` beside the repository; skips when absent."""
    path = Path(os.environ.get("BUDGET_SHARED_DIR", REPO.parent / "shared"))
    if not path.is_dir():
        pytest.skip(f"shared test material not found at {path} (set BUDGET_SHARED_DIR)")
    return path


@pytest.fixture(scope="session")
def shared_emodb(shared_dir: Path) -> Path:
    """The real EmoDB copy in the shared folder."""
    path = shared_dir / "data" / "emodb"
    if not (path / "wav").is_dir():
        pytest.skip(f"EmoDB not found at {path}")
    return path


@pytest.fixture(scope="session")
def emodb_lld_store(shared_emodb, tmp_path_factory) -> Path:
    """A feature store holding the real EmoDB's LLDs, extracted once for every test that reads them (files are known
    by content, so copies and links of EmoDB's files find them stored)."""
    import budget

    store = tmp_path_factory.mktemp("emodb-lld-store")
    budget.extract(root=shared_emodb, features="lld", store=store, log=lambda _: None)
    return store


@pytest.fixture(autouse=True)
def isolated_data_dir(tmp_path_factory, monkeypatch) -> Path:
    """Every test gets an empty data folder, so nothing reads or writes the user's."""
    path = tmp_path_factory.mktemp("data")
    monkeypatch.setenv("BUDGET_DATA_DIR", str(path))
    return path
