"""What a study records beside its results: the corpus it read, the store entries, the machine and the code."""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pandas as pd

from budget.corpora import get_adapter
from budget.features import FeatureStore
from budget.features.entries import Entry
from budget.grid import FeaturePair


def study_provenance(config, manifest: pd.DataFrame, classes: list[str], fold_names: dict[int, str], sizes: list,
                     skipped: list[str], bad_files: int, entries: dict[str, str], pairs: list[FeaturePair],
                     layer_sweeps: dict | None = None) -> dict:  # fmt: skip
    """The provenance of a study with ``config`` (a :class:`budget.study.StudyConfig`) on ``manifest``.

    Extraction seconds per utterance are recorded per feature set, an audio + text pair's as both of its own.
    """
    manifest_csv = manifest[["utt_id", "label", "group"]].to_csv(index=False).encode()
    root = FeatureStore(config.store).root
    extraction = {spec: Entry(root / name).seconds_per_utterance() for spec, name in entries.items()}
    for pair in pairs:
        parts = [extraction.get(pair.audio), extraction.get(pair.text)]
        extraction[pair.name] = None if None in parts else sum(parts)
    provenance = {
        "corpus": get_adapter(config.corpus).name,
        "classes": classes,
        "utterances": len(manifest),
        "class_counts": manifest["label"].value_counts().reindex(classes).astype(int).to_dict(),
        "groups": int(manifest["group"].nunique()),
        "folds": {str(k): v for k, v in fold_names.items()},
        "manifest_sha256": hashlib.sha256(manifest_csv).hexdigest(),
        "bad_audio_files": bad_files,
        "sizes": [size.to_json() for size in sizes],
        "skipped_sizes": skipped,
        "feature_store": str(root),
        "feature_entries": entries,
        "feature_pairs": {pair.name: [pair.audio, pair.text] for pair in pairs},
        "extraction_seconds_per_utterance": extraction,
        "layer_sweeps": layer_sweeps or {},
        "seeds": list(range(config.seeds)),
        "device": config.train.device,
        "versions": package_versions(),
        "git_revision": git_revision(),
        "machine": f"{platform.machine()} {platform.processor()} {os.cpu_count()} cores, Python {platform.python_version()}",
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    return provenance


def package_versions() -> dict[str, str]:
    versions = {}
    for name in ("budget-ser", "torch", "transformers", "scikit-learn", "numpy", "pandas", "pyAudioAnalysis"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def git_revision() -> str | None:
    """The source tree's commit, when budget runs from a git checkout."""
    source = Path(__file__).resolve().parent.parent
    try:
        revision = subprocess.run(
            ["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(source), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return revision + ("+dirty" if dirty else "")
