"""A small study on the miniature IEMOCAP that executor tests run in more than one place, and its results less the
columns that time them."""

from __future__ import annotations

import pandas as pd

from budget.engine.config import TrainConfig
from budget.study import StudyConfig


def small_study(root, tmp_path, **overrides) -> StudyConfig:
    """Every acoustic head but bimodal on LLDs, 1 and 2 per class, 2 seeds, 20 steps."""
    settings = dict(corpus="iemocap", root=str(root), features=("lld",), heads=("logreg", "mean_pool", "attn_pool", "mlp_pool"),
                    per_class=(1, 2), seeds=2, store=str(tmp_path / "store"),
                    train=TrainConfig(steps=20, lr=1e-2, batch_size=4, device="cpu"))  # fmt: skip
    return StudyConfig(**{**settings, **overrides})


def measured(results: pd.DataFrame) -> pd.DataFrame:
    """Results without the seconds a run took and was priced at: what two executions of a study share."""
    return results.drop(columns=["train_seconds", "estimated_seconds"])
