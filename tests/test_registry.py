"""The head registry: one protocol for every head a study can train."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from budget.engine.config import TrainConfig
from budget.errors import BudgetError
from budget.grid import PAIR, SINGLE, Run
from budget.heads import HEADS
from budget.registry import ACOUSTIC_HEADS, LOGREG, REGISTRY, head_spec
from budget.results import Checkpoint


def test_every_head_is_registered_once_with_what_it_reads():
    assert set(HEADS) < set(REGISTRY) and LOGREG in REGISTRY
    assert ACOUSTIC_HEADS == (*HEADS, LOGREG)
    assert {name for name, spec in REGISTRY.items() if spec.inputs == PAIR} == {"align_lstm", "align_lstm_audio", "align_lstm_text"}
    assert all(spec.inputs in (SINGLE, PAIR) and spec.name == name for name, spec in REGISTRY.items())


def test_an_unknown_head_is_a_clear_error_naming_the_choices():
    with pytest.raises(BudgetError, match="unknown model 'mlp'.*mlp_pool.*logreg.*align_lstm"):
        head_spec("mlp")


def test_budgets_and_schedules_come_from_the_spec():
    run = Run(0, 0, 5, np.arange(20), np.arange(20, 30))
    steps, epochs = TrainConfig(steps=300, max_epochs=0), TrainConfig(schedule="epochs", epochs=3, batch_size=4)
    assert head_spec("mlp_pool").units(run, steps) == 300 and head_spec("mlp_pool").steps(steps, 20) == 300
    passes = TrainConfig(steps=300, max_epochs=10, batch_size=4)  # 10 passes over 20 examples: 50 steps < 300 / 4
    assert head_spec("mlp_pool").units(run, passes) == 75 and head_spec("mlp_pool").steps(passes, 20) == 75
    assert head_spec("mlp_pool").units(run, epochs) == 15  # 3 passes over 20 examples in batches of 4
    assert head_spec("mean_pool").units(run, steps) == 1  # one full-batch fit
    assert head_spec("attn_pool").steps(passes, 20) == 50  # its L-BFGS iteration cap, whatever the subset
    assert head_spec("attn_pool").steps(replace(passes, attention_iterations=0), 20) == head_spec("mean_pool").steps(passes, 20) == 300
    assert head_spec(LOGREG).steps(steps, 20) == 0 and head_spec(LOGREG).units(run, steps) == 1
    on = replace(run, start=Checkpoint(1, {}))  # the convergence check's 2x run, going on from its 1x weights
    assert head_spec("mlp_pool").units(on, steps.scaled(2)) == 300 and head_spec("mlp_pool").units(run, steps.scaled(2)) == 600
    assert head_spec("mlp_pool").steps(steps.scaled(2), 20) == 600 and head_spec("mean_pool").units(on, steps.scaled(2)) == 1
    assert head_spec("mlp_pool").goes_on(steps) and head_spec("attn_pool").goes_on(epochs)
    assert not head_spec("attn_pool").goes_on(steps) and not head_spec("align_lstm").goes_on(epochs)  # fitted; trained again
    assert head_spec("align_lstm").schedule(epochs) == "epochs" and head_spec("align_lstm").budgeted
