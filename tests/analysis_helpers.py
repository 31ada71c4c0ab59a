"""Synthetic results tables with known truth, for the analysis, plan and report tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from budget.results import stored
from budget.sampling import FULL, Size

CLASSES = ["neutral", "happy", "sad", "angry"]


def synthetic_results(
    sizes=(10, 20, 40, 80, 160, 320),
    law=lambda n: 0.75 - 0.6 * n**-0.5,
    folds=5,
    seeds=3,
    fold_sd=0.01,
    noise_sd=0.004,
    seed=0,
    features="lld",
    head="mlp_pool",
    full=True,
) -> pd.DataFrame:
    """A results table whose mean UA follows ``law`` of examples per class, with fold and seed noise."""
    rng = np.random.default_rng(seed)
    fold_effect = rng.normal(0, fold_sd, folds)
    class_offsets = np.array([0.05, -0.10, 0.08, -0.03])
    rows = []
    for size in [*map(Size, sizes), *([FULL] if full else [])]:
        n = 2 * max(sizes) if size.full else size.per_class
        for fold in range(folds):
            for s in range(seeds):
                ua = float(np.clip(law(n) + fold_effect[fold] + rng.normal(0, noise_sd), 0, 1))
                recalls = np.clip(ua + class_offsets * (1 - n / (4 * max(sizes))), 0, 1)
                confusion = np.diag((recalls * 50).round().astype(int)) + 1
                rows.append(
                    {
                        "features": features, "head": head, "size": size, "n_train": 4 * n,
                        "fold": fold, "fold_name": f"g{fold}", "seed": s,
                        "ua": ua, "wa": ua, "macro_f1": ua,
                        **{f"recall_{c}": float(r) for c, r in zip(CLASSES, recalls, strict=True)},
                        "confusion": json.dumps(confusion.tolist()), "n_test": 200, "train_seconds": 0.1,
                    }
                )  # fmt: skip
    return pd.DataFrame(rows)


def write_run(folder: Path) -> Path:
    """A finished study's run folder: two feature sets of synthetic results on 4 folds, config and provenance."""
    folder.mkdir(parents=True)
    results = pd.concat(
        [
            synthetic_results(sizes=(10, 20, 40, 80), folds=4, seeds=2),
            synthetic_results(sizes=(10, 20, 40, 80), folds=4, seeds=2, features="hf:/m/whisper", law=lambda n: 0.8 - 0.6 * n**-0.5),
        ],
        ignore_index=True,
    )
    stored(results).to_parquet(folder / "results.parquet")
    (folder / "config.json").write_text(json.dumps({"corpus": "emodb", "train": {"epochs": 60, "lr": 1e-4}}))
    (folder / "provenance.json").write_text(
        json.dumps({"corpus": "emodb", "utterances": 339, "classes": ["neutral", "happy", "sad", "angry"],
                    "folds": {"0": "03", "1": "08"}, "versions": {"torch": "2.13.0"}})
    )  # fmt: skip
    return folder
