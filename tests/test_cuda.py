"""The training engine on a CUDA GPU: the same guarantees as on CPU, and bf16 that keeps UA.

Every test here carries the ``cuda`` marker and is skipped, with the reason,
where torch sees no CUDA device (`bash benchmarks/gpu_check.sh` runs them on a
GPU machine).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from test_training import (
    check_attention_fit,
    check_bf16_keeps_ua,
    check_pooled_optimum,
    stepped,
    stepped_runs,
    synthetic_features,
)

from budget.engine.config import TrainConfig
from budget.engine.runs import train_runs
from budget.heads import HEADS

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch sees none)"),
]


@pytest.mark.parametrize("head", sorted(HEADS))
def test_batched_equals_one_at_a_time_on_cuda(head):
    """As on CPU, a run's predictions do not depend on its mates, nor on the device, beyond rounding's reach.

    cuBLAS picks kernels by shape, so a member alone sums in another order than
    batched: predictions on a toy problem with small margins may flip for a few
    utterances, not for most (90% must agree).
    """
    features, labels = synthetic_features()
    runs = stepped_runs(head, labels)
    config = replace(stepped(head), device="cuda", bf16=False)
    together = train_runs(HEADS[head], features, labels, runs, 3, config)
    cpu = train_runs(HEADS[head], features, labels, runs, 3, replace(config, device="cpu"))
    for e, run in enumerate(runs):
        (alone,) = train_runs(HEADS[head], features, labels, [run], 3, config)
        agree = np.mean(alone == together[e])
        assert agree >= 0.9, f"run {e}: {agree:.0%} of predictions agree alone and batched"
        assert np.mean(cpu[e] == together[e]) >= 0.9  # CUDA and CPU train the same model


@pytest.mark.parametrize("head", ["attn_pool", "mlp_pool"])
def test_bf16_keeps_what_a_head_learns(head):
    check_bf16_keeps_ua(head, "cuda")


@pytest.mark.parametrize("head", ["mean_pool", "meanmax_pool"])
def test_pooled_heads_are_solved_to_the_logreg_optimum_on_cuda(head):
    check_pooled_optimum(head, "cuda")


def test_attention_fits_do_not_depend_on_mates_or_budget_on_cuda():
    check_attention_fit("cuda")


def test_a_study_trains_on_cuda(tmp_path):
    from corpus_builders import build_iemocap

    from budget.study import Study, StudyConfig

    root = build_iemocap(tmp_path / "iemocap")
    config = StudyConfig(
        corpus="iemocap", root=str(root), features=("lld",), heads=("mean_pool", "mlp_pool"), per_class=(1, 2),
        seeds=1, store=str(tmp_path / "store"), train=TrainConfig(steps=20, lr=1e-2, batch_size=4, device="auto"),
    )  # fmt: skip
    study = Study(config, tmp_path / "run")
    assert study.config.train.device == "cuda"
    results = study.run(log=lambda _: None)
    assert len(results) == 2 * 2 * 5 and results["ua"].between(0, 1).all()

