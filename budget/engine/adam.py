"""Stepped heads: every run of a chunk as one ensemble, advanced by Adam, then asked for its test predictions."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from budget.engine.config import TrainConfig
from budget.engine.device import autocast_for, product_dtype
from budget.engine.packed import (
    DeviceFeatures,
    FrameSample,
    bucketed,
    data_order,
    frame_samples,
    frame_starts,
    member_seeds,
    packed_widths,
    pad_rows,
    slot_frames,
)
from budget.errors import BudgetError
from budget.grid import Run
from budget.heads import DropoutKeys, EnsembleHead
from budget.results import Checkpoint, RunOutput

#: utterance slots per member in one evaluation batch
EVAL_SLOTS = 64


#: The most frame values an evaluation batch gathers for all its members (1 GB in float32, beside their copy in
#: the product precision), unless ``TrainConfig.eval_mb`` says less: EmoDB's folds in one batch, fewer slots of
#: long or wide frames (every hidden state of an encoder side by side took 9.5 GB for four runs at 64 slots).
#: A member's predictions do not depend on the batch they are made in.
EVAL_VALUES = 2**28


def eval_values(config: TrainConfig, product: torch.dtype) -> int:
    """The most frame values an evaluation batch gathers: :data:`EVAL_VALUES`, or what ``config.eval_mb`` holds of
    them in float32 and in ``product`` side by side."""
    if config.eval_mb is None:
        return EVAL_VALUES
    return min(EVAL_VALUES, config.eval_mb * 2**20 // (4 + product.itemsize))


def make_optimiser(parameters, config: TrainConfig, steps: int):
    """AdamW and its learning-rate schedule: a cosine to zero over ``steps``, or constant (the paper's).

    Adam's fused kernel on CPU and CUDA: one pass over each parameter a step
    rather than one per arithmetic operation.
    """
    parameters = list(parameters)
    fused = all(parameter.device.type in ("cpu", "cuda") for parameter in parameters)
    optimiser = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay, fused=fused)
    if config.schedule == "steps":
        return optimiser, torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=steps)
    return optimiser, torch.optim.lr_scheduler.LambdaLR(optimiser, lambda _: 1.0)


def train_ensemble(head_class: type[EnsembleHead], inputs: DeviceFeatures, labels, runs, n_classes, config, advance,
                   probabilities: bool = False, predict: bool = True) -> list[np.ndarray | RunOutput]:  # fmt: skip
    """Step ``runs`` as one ensemble on :func:`prepared_inputs` and return each run's test predictions, with the
    weights it ended at where it ``keeps`` them (:class:`budget.results.Checkpoint`), the layer weights it learned, on
    stacked layers, and its class probabilities where asked for.

    A run trains ``config.cycles`` cycles of its schedule, each a fresh
    optimiser over :meth:`TrainConfig.steps_for` steps, or the cycles its
    ``start`` lacks, from the weights it holds (every run of a call from the
    same cycle).  Data order, frame draws and dropout masks follow the run's
    step count over all cycles, so a run trained on from a checkpoint is the
    run trained through from the start.
    """
    device = inputs.device
    kind = head_class.pooled_kind
    seeds = [member_seeds(run) for run in runs]
    generators = [torch.Generator().manual_seed(init) for init, _ in seeds]
    head: EnsembleHead = head_class(generators, inputs.layer_dim, n_classes, dropout=config.dropout, stacked=inputs.stacked)
    head.set_standardisation(*inputs.standardisation(runs, kind))
    first = _first_cycle(runs, config)
    if first:
        head.load_members([run.start.parameters for run in runs])
    head.to(device)
    cycle = config.steps_for(len(runs[0].train))
    total = config.cycles * cycle
    orders = np.stack([data_order(run, total, config.batch_size)[first * cycle :] for run in runs], axis=1)  # (steps, E, B)
    widths, samples = None, None
    if config.train_frames and head_class.frame_mean:
        draws = np.stack([frame_starts(run, total, config.batch_size)[first * cycle :] for run in runs], axis=1)
        counts, starts = frame_samples(inputs.lengths, orders, draws, config.train_frames)
        widths = bucketed(counts.sum(axis=-1).max(axis=-1))
        samples = FrameSample(torch.from_numpy(counts).to(device), torch.from_numpy(starts).to(device))
    elif not head_class.pools_first:
        widths = packed_widths(inputs, orders)
    order_t = torch.from_numpy(orders).to(device)
    label_t = torch.from_numpy(np.append(labels.astype(np.int64), 0)).to(device)  # index -1 -> a dummy label
    keys = torch.tensor([key for _, key in seeds], dtype=torch.int64, device=device)
    loss_fn = nn.CrossEntropyLoss(reduction="none")
    autocast = autocast_for(device, config)
    head.train()
    for step in range(len(orders)):
        if step % cycle == 0:  # each cycle: a fresh optimiser, the learning rate from its start
            optimiser, schedule = make_optimiser(head.parameters(), config, cycle)
        slots = order_t[step]
        sample = FrameSample(samples.counts[step], samples.starts[step]) if samples is not None else None
        batch = inputs.batch(slots, int(widths[step]) if widths is not None else 0, kind, sample)
        batch.keys = DropoutKeys(keys, first * cycle + step)
        with autocast:
            logits = head(batch)  # (E, B, C)
        valid = (slots >= 0).float()
        losses = loss_fn(logits.float().reshape(-1, n_classes), label_t[slots].reshape(-1)).view_as(valid)
        loss = ((losses * valid).sum(1) / valid.sum(1)).sum()  # each member's mean: members never mix
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        if advance:
            advance(len(runs))
    if not predict:
        return []
    logits = _test_logits(head, inputs, runs, kind, autocast, eval_values(config, product_dtype(device, config)))
    predicted, weights = logits.argmax(-1).numpy(), head.layer_weights()
    return [RunOutput.packed(predicted[e, : len(run.test)], logits[e, : len(run.test)] if probabilities else None,
                             None if weights is None else weights[e].cpu().numpy(),
                             Checkpoint(config.cycles, head.member_parameters(e)) if run.keeps else None)
            for e, run in enumerate(runs)]  # fmt: skip


def _first_cycle(runs: list[Run], config: TrainConfig) -> int:
    """The cycle the runs go on from: their checkpoints' (0 without), the same for every run and below the config's."""
    held = sorted({run.start.cycles if run.start else 0 for run in runs})
    if len(held) != 1 or held[0] >= config.cycles:
        raise BudgetError(f"runs trained together go on from one cycle below {config.cycles}; they hold {held}")
    return held[0]


@torch.inference_mode()
def _test_logits(head: EnsembleHead, inputs: DeviceFeatures, runs: list[Run], kind: str, autocast, values: int
                 ) -> torch.Tensor:  # fmt: skip
    """Every member's logits on its run's test positions, ``(E, longest test, classes)`` on the CPU, in batches of at
    most ``values`` frame values (one utterance a member at least)."""
    head.eval()
    device = inputs.device
    tests = pad_rows([run.test for run in runs], -1).numpy()
    per_slot = slot_frames(inputs.lengths) if kind == "" else 1.0
    step = int(max(1, min(EVAL_SLOTS, values // max(len(runs) * per_slot * inputs.dim, 1))))
    outputs = []
    for start in range(0, tests.shape[1], step):
        slots = tests[:, start : start + step]
        width = int(packed_widths(inputs, slots))
        batch = inputs.batch(torch.from_numpy(slots).to(device), width, kind)
        with autocast:
            outputs.append(head(batch).float().cpu())
    return torch.cat(outputs, dim=1)

