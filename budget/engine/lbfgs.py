"""Fitted heads: each run's L2-penalised objective solved to an optimum by full-batch L-BFGS."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from budget.engine.config import TrainConfig
from budget.engine.packed import DeviceFeatures, utterance_blocks
from budget.grid import Run
from budget.heads import AttnPool, EnsembleHead, MeanPool
from budget.results import RunOutput

LBFGS_HISTORY = 20


def solve(head_class: type[EnsembleHead], inputs: DeviceFeatures, labels, runs, n_classes, config, advance,
          probabilities: bool = False) -> list[np.ndarray | RunOutput]:  # fmt: skip
    """Each run's predictions from its head fitted to an optimum: the pooled heads all runs at once
    (:func:`fit_full_batch`), attention and pooled heads over stacked layers each run alone (:func:`fit_attention`,
    :func:`fit_layer_mix`); with ``probabilities``, each run's class probabilities too."""
    device = inputs.device
    if inputs.stacked > 1:
        return fit_layer_mix(head_class, inputs, labels, runs, n_classes, config, advance, probabilities)
    if not head_class.pools_first:
        outputs = []
        for run, head in zip(runs, fit_attention(inputs, labels, runs, n_classes, config), strict=True):
            logits = attention_logits(head, inputs, run.test)[0]
            outputs.append(RunOutput.packed(logits.argmax(-1).cpu().numpy(), logits if probabilities else None))
            if advance:
                advance(1)
        return outputs
    head = fit_full_batch(head_class, inputs, labels, runs, n_classes, config)
    if advance:
        advance(len(runs))
    rows = np.unique(np.concatenate([run.test for run in runs]))
    with torch.inference_mode():
        logits = head.shared_logits(inputs.pooled(head.pooled_kind)[torch.from_numpy(rows).to(device)])
    predicted = logits.argmax(-1).cpu().numpy()  # (E, rows)
    return [RunOutput.packed(predicted[e, np.searchsorted(rows, run.test)],
                             logits[e, np.searchsorted(rows, run.test)] if probabilities else None)
            for e, run in enumerate(runs)]  # fmt: skip


def fit_layer_mix(head_class: type[EnsembleHead], inputs: DeviceFeatures, labels, runs, n_classes, config,
                  advance, probabilities: bool = False) -> list[RunOutput]:  # fmt: skip
    """Each run's pooled head over stacked layers, with the layer weights it learned, each run fitted alone.

    The layer weights multiply the classifier, so the objective is not convex
    and L-BFGS finds a local optimum that a joint fit's shared line search would
    make depend on the run's mates; alone, a run never sees them.  Every weight
    starts at zero (equal layer weights), as :func:`fit_full_batch`'s.
    """
    device = inputs.device
    kind = head_class.pooled_kind
    mean, std = inputs.standardisation(runs, kind)
    pooled = inputs.pooled(kind)
    outputs = []
    for e, run in enumerate(runs):
        head = _zero_head(head_class, 1, inputs.layer_dim, n_classes, (mean[e : e + 1], std[e : e + 1]), device,
                          inputs.stacked)  # fmt: skip
        head = _fit_alone(head, (pooled[torch.from_numpy(run.train).to(device)],), labels, run, n_classes, config)
        with torch.inference_mode():
            logits = head.shared_logits(pooled[torch.from_numpy(run.test).to(device)])[0]
        outputs.append(RunOutput.packed(logits.argmax(-1).cpu().numpy(), logits if probabilities else None,
                                        head.layer_weights()[0].cpu().numpy()))  # fmt: skip
        if advance:
            advance(1)
    return outputs


@torch.inference_mode()
def attention_logits(head: EnsembleHead, inputs: DeviceFeatures, rows: np.ndarray, block_values: int = 2**22
                     ) -> torch.Tensor:  # fmt: skip
    """Every member's logits ``(E, len(rows), classes)`` for the utterances ``rows``, gathered in blocks of whole
    utterances of at most ``block_values`` frame values (one utterance at least): a held-out fold's frames are
    never copied at once."""
    rows = np.asarray(rows, dtype=np.int64)
    blocks = [head.shared_logits(*inputs.gathered(rows[first:last]))
              for first, last in utterance_blocks(inputs.lengths[rows], block_values // max(inputs.dim, 1))]  # fmt: skip
    return torch.cat(blocks, dim=1) if blocks else head.shared_logits(*inputs.gathered(rows))


@dataclass
class _Rows:
    """Rows of a full-batch objective: what the head's ``shared_logits`` reads of them, their one-hot targets and
    each member's weight on each row ``(E, rows)``: 1/n on the member's n training rows, else 0."""

    inputs: tuple[torch.Tensor, ...]
    target: torch.Tensor
    share: torch.Tensor


def _minimise(head: EnsembleHead, rows: _Rows, strength: torch.Tensor, config: TrainConfig, iterations: int = 0
              ) -> EnsembleHead:  # fmt: skip
    """Full-batch L-BFGS on ``head``'s weights: every member's mean cross-entropy over its rows plus
    ``strength k |W|^2 / 2`` for each penalised weight (:meth:`EnsembleHead.penalties`); at most ``iterations``
    (0: the config's cap, :meth:`TrainConfig.lbfgs_iterations`), until no gradient element exceeds ``config.lbfgs_tolerance``.  The fitted head's ``evaluations``
    counts the objective's evaluations, what a fit's time goes to."""
    optimiser = torch.optim.LBFGS(
        list(head.parameters()), max_iter=iterations or config.lbfgs_iterations(False), history_size=LBFGS_HISTORY,
        tolerance_grad=config.lbfgs_tolerance, tolerance_change=0.0, line_search_fn="strong_wolfe",
    )  # fmt: skip
    head.evaluations = 0

    def objective() -> torch.Tensor:
        head.evaluations += 1
        optimiser.zero_grad()
        norms = sum(k * weight.square().flatten(1).sum(1) for weight, k in head.penalties())  # (E,)
        logits = head.shared_logits(*rows.inputs)  # (E, rows, classes)
        losses = torch.logsumexp(logits, -1) - (logits * rows.target).sum(-1)  # cross-entropy, (E, rows)
        loss = (rows.share * losses).sum() + 0.5 * (strength * norms).sum()
        loss.backward()
        return loss

    optimiser.step(objective)
    return head.eval()


def _fit_alone(head: EnsembleHead, inputs: tuple[torch.Tensor, ...], labels: np.ndarray, run: Run, n_classes: int,
               config: TrainConfig, iterations: int = 0) -> EnsembleHead:  # fmt: skip
    """``head`` (one member) fitted by :func:`_minimise` on ``run``'s training rows alone, as its ``shared_logits``
    read them from ``inputs``."""
    device = head.scale.device
    rows = _Rows(inputs, _targets(labels, run.train, n_classes, device), torch.full((1, 1), 1 / len(run.train), device=device))
    return _minimise(head, rows, torch.tensor([1 / (config.l2_c * len(run.train))], device=device), config, iterations)


def _targets(labels: np.ndarray, rows: np.ndarray, n_classes: int, device: torch.device) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.from_numpy(labels[rows].astype(np.int64)), n_classes).to(device, torch.float32)


def _zero_head(head_class: type[EnsembleHead], n_members: int, dim: int, n_classes: int, stats, device,
               stacked: int = 1) -> EnsembleHead:  # fmt: skip
    """A head of ``n_members`` with every weight zero (one start for every run, whatever its seed)."""
    head = head_class([torch.Generator() for _ in range(n_members)], dim, n_classes, dropout=0.0, stacked=stacked)
    head.set_standardisation(*stats)
    head.to(device)
    with torch.no_grad():
        for parameter in head.parameters():
            parameter.zero_()
    return head


def fit_full_batch(
    head_class: type[EnsembleHead], inputs: DeviceFeatures, labels: np.ndarray, runs: list[Run], n_classes: int,
    config: TrainConfig, pooled: Callable[[torch.Tensor], torch.Tensor] | None = None,
    stats: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> EnsembleHead:  # fmt: skip
    """Fit every run's pooled head to its optimum: one full-batch L-BFGS on the sum of the runs' objectives.

    A run's objective is its mean cross-entropy plus ``k |W|^2 / (2 C n)`` for
    each penalised weight (scikit-learn's for the classifier, ``k`` = 1, with
    ``n`` training examples; :meth:`EnsembleHead.penalties`), on its own
    standardised inputs.  The objectives share no parameter and are strictly
    convex, so mates only change the path (L-BFGS's history and line search
    are joint): each run ends at its own optimum, within
    ``config.lbfgs_tolerance`` of the run solved alone.  Logits come from rows
    shared by all runs (standardisation folded into the weights), so no run's
    data is copied.  Every weight starts at zero.  ``pooled`` (the inputs of
    given rows) and ``stats`` replace the stored statistics and the runs'
    standardisation (attention's start: :func:`fit_attention`).
    """
    device = inputs.device
    head = _zero_head(head_class, len(runs), inputs.dim, n_classes,
                      stats or inputs.standardisation(runs, head_class.pooled_kind), device)  # fmt: skip
    rows = np.unique(np.concatenate([run.train for run in runs]))  # every run's training rows, sorted
    share = torch.zeros(len(runs), len(rows), device=device)
    for e, run in enumerate(runs):  # once per fit, not per iteration
        share[e, torch.from_numpy(np.searchsorted(rows, run.train)).to(device)] = 1 / len(run.train)
    index = torch.from_numpy(rows).to(device)
    x = inputs.pooled(head_class.pooled_kind)[index] if pooled is None else pooled(index)
    strength = torch.tensor([1 / (config.l2_c * len(run.train)) for run in runs], device=device)
    return _minimise(head, _Rows((x,), _targets(labels, rows, n_classes, device), share), strength, config)


def fit_attention(inputs: DeviceFeatures, labels: np.ndarray, runs: list[Run], n_classes: int, config: TrainConfig):
    """Yield each run's attention head (one member), fitted alone toward an optimum of its objective.

    The objective is :func:`fit_full_batch`'s, with the score weights' stronger
    penalty, on the run's own training utterances only, as ``inputs`` holds
    them (each utterance's segment means: :func:`prepared_inputs`).  The fit
    stops at the tolerance or after ``config.attention_iterations``: a fit's
    work then grows as its subset (evaluations to the tolerance grow with it,
    as the penalty weakens), and the convergence check doubles the cap.

    The fit starts where attention is uniform and the classifier is at its
    optimum for it: mean pooling of the run's standardised segments, a convex
    problem solved for every run at once on the utterances' mean segments
    (uniform attention pools exactly those).  A run never sees its
    mates: the start is separable and each fit is its own.
    """
    device = inputs.device
    mean, std = inputs.standardisation(runs, "")
    start = None
    if config.attention_start == "pooled":
        start = fit_full_batch(MeanPool, inputs, labels, runs, n_classes, config, inputs.frame_means, (mean, std))
    for e, run in enumerate(runs):
        head = _zero_head(AttnPool, 1, inputs.dim, n_classes, (mean[e : e + 1], std[e : e + 1]), device)
        if start is not None:
            with torch.no_grad():
                head.classifier.weight.copy_(start.classifier.weight[e : e + 1])
                head.classifier.bias.copy_(start.classifier.bias[e : e + 1])
        yield _fit_alone(head, inputs.gathered(run.train), labels, run, n_classes, config, config.lbfgs_iterations(True))

