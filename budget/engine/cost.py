"""What runs cost: how many train together within a memory budget, and seconds per unit of work, measured."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch

from budget.engine.adam import train_ensemble
from budget.engine.config import TrainConfig, solved
from budget.engine.device import training_device, uses_autocast, warm_up
from budget.engine.lbfgs import LBFGS_HISTORY, solve
from budget.engine.packed import DeviceFeatures, prepared_inputs, slot_frames
from budget.features.featureset import FeatureSet
from budget.grid import Run
from budget.heads import EnsembleHead
from budget.sampling import Size

#: A CPU ensemble chunk's working set, and the fewest runs it holds.  Frame heads are compute-bound on a CPU,
#: so batching buys only each step's fixed cost (Adam, mask keys, kernel launches), and a working set far
#: beyond the caches slows every product: a few tens of MB of activations, but never so few runs that the
#: fixed cost falls on one or two (the scan is in benchmarks/RESULTS.md).
CPU_CHUNK_MB = 32


CPU_MIN_MEMBERS = 4


#: Runs the cost model fits to time attention's L-BFGS, and steps it times of a stepped head.
SOLVE_PROBE_RUNS = 4


PROBE_STEPS = 20


@dataclass(frozen=True)
class HeadCost:
    """A head's useful work, for the floor and the cost model: multiply-adds per frame (or pooled vector)."""

    macs_per_row: int
    rows_per_slot: float  # frames per utterance, or 1 for heads that pool first

    def flops_per_step(self, members: int, batch_size: int) -> float:
        return 6.0 * self.macs_per_row * self.rows_per_slot * batch_size * members  # forward + backward


def head_cost(head: type[EnsembleHead], features: FeatureSet | DeviceFeatures, n_classes: int, config: TrainConfig) -> HeadCost:
    """A stepped head's useful work: frames per slot are those its training steps read (:attr:`TrainConfig.train_frames`)."""
    lengths = np.asarray(features.lengths, dtype=float)
    if config.train_frames and head.frame_mean:
        lengths = np.minimum(lengths, config.train_frames)
    rows = 1.0 if head.pools_first else float(np.mean(lengths)) if len(lengths) else 1.0
    mix = features.dim if features.stacked > 1 else 0  # learned layer weights: a multiply-add per stacked input
    return HeadCost(head.matmul_flops(features.layer_dim, n_classes) + mix, rows)


def members_per_chunk(
    head: type[EnsembleHead], features: FeatureSet | DeviceFeatures, config: TrainConfig, device: torch.device,
    n_classes: int, train_rows: int | None = None,
) -> int:
    """How many runs one ensemble step holds within the memory budget (on CUDA, the memory free once
    :func:`prepared_inputs` has made what the head reads); ``train_rows``, the most training rows of a run (default:
    every utterance), bounds what a fitted chunk reads."""
    budget_mb, fewest = config.memory_mb, 1
    if budget_mb is None:
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            free += torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)  # torch's cache, unused
            budget_mb = int(0.6 * max(free, 0) / 2**20)
        else:
            budget_mb, fewest = CPU_CHUNK_MB, CPU_MIN_MEMBERS
    if solved(head, config):  # attention's runs are fitted one at a time; a chunk shares their pooled start
        width = head.input_width(features.dim)
        return max(fewest, _fitted_members(budget_mb * 2**20, len(features), train_rows, n_classes, width))
    if head.pools_first:
        return 4096
    per_slot = slot_frames(features.lengths)
    if config.train_frames and head.frame_mean:
        per_slot = min(per_slot, config.train_frames)
    rows = config.batch_size * per_slot  # packed frames per member
    activation_bytes = 2 if uses_autocast(device, config) else 4
    # gathered frames in the product dtype (and attn_pool's standardised float32 copy); the slot membership;
    # per hidden unit: the activation, its dropout mask and its gradient
    per_member = rows * (features.dim * (activation_bytes + 4) + config.batch_size * 4 + head.hidden_units(features.layer_dim) * 3 * activation_bytes)
    return max(fewest, int(budget_mb * 2**20 // per_member))


def _fitted_members(budget: int, utterances: int, train_rows: int | None, n_classes: int, width: int) -> int:
    """The most runs one full-batch fit holds within ``budget`` bytes: its logits (and their gradients) cover the
    union of its runs' training rows, at most ``members * train_rows`` and at most every utterance, and each run
    has its weights, their gradient and the L-BFGS history."""
    per_row = 4 * n_classes * 8
    weights = 4 * width * (n_classes + 1) * (2 * LBFGS_HISTORY + 4)
    rows = min(train_rows or utterances, utterances)

    def fits(members: int) -> bool:
        return members * (per_row * min(utterances, members * rows) + weights) <= budget

    low, high = 0, 1
    while fits(high) and high < 2**20:
        low, high = high, 2 * high
    while high - low > 1:  # fits(low), not fits(high)
        middle = (low + high) // 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    return low


def units(head: type[EnsembleHead], run: Run, config: TrainConfig) -> int:
    """A run's units of work for the cost model and progress: the optimiser steps it takes (those its checkpoint
    lacks, where it goes on from one), or one fit for a solved head."""
    if solved(head, config):
        return 1
    return (config.cycles - (run.start.cycles if run.start else 0)) * config.steps_for(len(run.train))


@dataclass(frozen=True)
class CostModel:
    """Seconds per unit of :func:`units` (a run-step, or one fit) for a run of ``n`` training examples: ``base +
    per_example * n``, the line through probes timed at a job's smallest and largest size.

    A stepped run's units are its steps and a step's cost barely moves with
    the subset; a fitted run is one unit whose cost grows with the examples it
    fits (more rows, more iterations), so a probe at one size alone would
    misprice every other.
    """

    base: float = 0.0
    per_example: float = 0.0

    def unit_seconds(self, n_train: float) -> float:
        return max(self.base + self.per_example * n_train, 0.0)

    @classmethod
    def probed(cls, measure: Callable[[list[Run]], float], runs: list[Run]) -> CostModel:
        """Time ``measure`` (seconds per unit for some runs of one size) at the smallest and largest size of ``runs``.

        Runs are grouped by size: ``full`` runs hold a different number of
        examples in each fold, and probing only those with the most examples
        would time an ensemble of one fold's few runs, where the study trains
        every fold's ``full`` runs together whenever their budgets agree (at the
        step cap).
        """
        by_size: dict[Size, list[Run]] = {}
        for run in runs:
            by_size.setdefault(run.size, []).append(run)
        if not by_size:
            return cls()
        examples = {size: float(np.mean([len(run.train) for run in group])) for size, group in by_size.items()}
        ordered = sorted(examples, key=examples.__getitem__)
        (n0, s0), *rest = [(examples[size], measure(by_size[size])) for size in dict.fromkeys((ordered[0], ordered[-1]))]
        if not rest or rest[0][0] == n0:
            return cls(s0)
        ((n1, s1),) = rest
        slope = (s1 - s0) / (n1 - n0)
        return cls(s0 - slope * n0, slope)


def cost_model(
    head: type[EnsembleHead], features: FeatureSet, labels: np.ndarray, runs: list[Run], n_classes: int,
    config: TrainConfig,
    uploaded: DeviceFeatures | None = None,
) -> CostModel:  # fmt: skip
    """The cost of ``runs`` of an ensemble head: :func:`measure_unit_seconds` at their smallest and largest size."""
    if not runs:
        return CostModel()
    device = training_device(config)
    warm_up(device)
    inputs = prepared_inputs(head, uploaded or DeviceFeatures.upload(features, device), config)  # untimed: once
    return CostModel.probed(lambda sample: measure_unit_seconds(head, inputs, labels, sample, n_classes, config), runs)


def short_call_seconds(work: Callable[[], object], short: float = 1.0) -> float:
    """Seconds one call of ``work`` takes, the lesser of two where the first took under ``short``: a fit that
    takes milliseconds pays first-call costs (caches, allocations) several times over in one timing, which
    a study's many fits share."""
    started = time.perf_counter()
    work()
    first = time.perf_counter() - started
    if first >= short:
        return first
    started = time.perf_counter()
    work()
    return min(first, time.perf_counter() - started)


def measure_unit_seconds(
    head: type[EnsembleHead], inputs: DeviceFeatures, labels: np.ndarray, runs: list[Run], n_classes: int,
    config: TrainConfig,
    timed_steps: int = PROBE_STEPS,
) -> float:  # fmt: skip
    """Seconds per unit of :func:`units` for these runs (of one size), on :func:`prepared_inputs`.

    Ensembles are timed over ``timed_steps`` steps of one chunk and divided by
    the members stepped; pooled heads by the fit of one chunk, attention by
    the fits of a few runs.
    """
    device = inputs.device
    if solved(head, config):  # pooled heads: one chunk, as they are fitted; attention: a few runs, each alone
        chunk = members_per_chunk(head, inputs, config, device, n_classes, max(len(run.train) for run in runs))
        sample = runs[: chunk if head.pools_first else min(SOLVE_PROBE_RUNS, chunk)]
        return short_call_seconds(lambda: solve(head, inputs, labels, sample, n_classes, config, None)) / len(sample)
    sample = [replace(run, start=None) for run in runs[: members_per_chunk(head, inputs, config, device, n_classes)]]
    probe = replace(config, schedule="steps", steps=timed_steps + 1, max_epochs=0, cycles=1)
    clock = []

    def tick(_n: int) -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        clock.append(time.perf_counter())

    # Twice, timing the second: the first builds a kernel for each new batch width, which a whole run pays once
    # for a few dozen widths but a short probe would pay on nearly every step.
    train_ensemble(head, inputs, labels, sample, n_classes, probe, None, predict=False)
    train_ensemble(head, inputs, labels, sample, n_classes, probe, tick, predict=False)
    return (clock[-1] - clock[0]) / timed_steps / len(sample)

