"""Classifier heads, each an *ensemble*: E independent models advanced in one step.

A budget study is hundreds of small trainings.  Every head here holds its
parameters with a leading member axis (``(E, in, out)`` weights) and runs all
members with batched matrix products, so one optimiser step trains them all.
Members never mix: each has its own initialisation, data, dropout masks
(drawn from its own generator) and loss term, and Adam is element-wise, so a
member trained inside an ensemble follows the same path as trained alone.

Frame-level heads read *packed* batches: each member's utterances laid end to
end, ``frames`` ``(E, N, D)`` with ``segments`` ``(E, N)`` naming the batch slot
each frame belongs to (padding frames point at a spare slot ``B`` that is
dropped).  Pooling over valid frames is then a segment sum, with no padding
of every utterance to the longest.

Heads (Boigne et al. 2020):

``mean_pool``      mean over frames, dropout, linear
``meanmax_pool``   mean and max over frames concatenated, dropout, linear
``attn_pool``      a logistic-regression score per frame, softmax over the
                   utterance's frames, weighted mean, dropout, linear
``mlp_pool``       an MLP shared across frames (dropout after each layer),
                   mean over frames, linear

``mean_pool`` and ``meanmax_pool`` pool before any learned layer, so they
train on the store's pooled statistics: the same function, far cheaper.

Inputs are standardised per member with statistics of that member's own
training subset (never the test fold), held as buffers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from budget.errors import BudgetError

DEFAULT_DROPOUT = 0.2
#: mlp_pool capacity target: the MLP gets about this many parameters whatever the input width.
MLP_PARAMETERS = 196_608
MLP_WIDTH = 256
MLP_MAX_DEPTH = 4


@dataclass
class PackedBatch:
    """One training or test batch for every member of an ensemble."""

    n_slots: int  # B utterance slots per member
    pooled: torch.Tensor | None = None  # (E, B, F): pooled statistics, for heads that pool first
    frames: torch.Tensor | None = None  # (E, N, D): frames of the batch's utterances, end to end
    segments: torch.Tensor | None = None  # (E, N) long: slot of each frame; padding -> n_slots
    frame_counts: list[int] | None = None  # valid frames per member (the rest of N is padding)


def mlp_shape(in_dim: int) -> tuple[int, int]:
    """(depth, width) of mlp_pool's frame MLP for an input width.

    Width is fixed at 256 and depth chosen so the MLP holds about
    :data:`MLP_PARAMETERS` weights: 34-d LLDs get 4 layers, 384- to 512-d
    encoder features 2, 1024-d features 1.  This gives hand-made and
    pretrained features a similar capacity, as the paper does by scaling the
    MLP with the input dimension.
    """
    depth = 1 + round((MLP_PARAMETERS - in_dim * MLP_WIDTH) / MLP_WIDTH**2)
    return max(1, min(MLP_MAX_DEPTH, depth)), MLP_WIDTH


class EnsembleLinear(nn.Module):
    """E independent linear layers; each member initialised as ``nn.Linear`` is, from its own generator."""

    def __init__(self, generators: list[torch.Generator], in_dim: int, out_dim: int):
        super().__init__()
        bound = 1 / math.sqrt(in_dim)
        weight = torch.empty(len(generators), in_dim, out_dim)
        bias = torch.empty(len(generators), out_dim)
        for e, generator in enumerate(generators):
            weight[e].uniform_(-bound, bound, generator=generator)
            bias[e].uniform_(-bound, bound, generator=generator)
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(E, M, in)`` to ``(E, M, out)``."""
        return torch.baddbmm(self.bias.unsqueeze(1), x, self.weight)


class EnsembleDropout(nn.Module):
    """Dropout whose mask for member e comes from member e's generator, over its valid rows only."""

    def __init__(self, generators: list[torch.Generator], p: float):
        super().__init__()
        self.generators = generators
        self.p = p

    def forward(self, x: torch.Tensor, valid_rows: list[int] | None = None) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        mask = torch.zeros_like(x)
        for e, generator in enumerate(self.generators):
            rows = x.shape[1] if valid_rows is None else valid_rows[e]
            draw = torch.rand((rows, *x.shape[2:]), generator=generator, device="cpu").to(x.device)
            mask[e, :rows] = (draw >= self.p).to(x.dtype)
        return x * mask / (1 - self.p)


class EnsembleHead(nn.Module):
    """Base of the heads: per-member input standardisation and the classifier layer."""

    name: ClassVar[str]
    pools_first: ClassVar[bool] = False

    def __init__(self, generators: list[torch.Generator], in_dim: int, n_classes: int, dropout: float):
        super().__init__()
        self.n_members = len(generators)
        self.in_dim = in_dim
        self.register_buffer("shift", torch.zeros(self.n_members, 1, self.input_width(in_dim)))
        self.register_buffer("scale", torch.ones(self.n_members, 1, self.input_width(in_dim)))
        self.dropout = EnsembleDropout(generators, dropout)

    @classmethod
    def input_width(cls, in_dim: int) -> int:
        """Width of what the head reads: pooled statistics or frames."""
        return in_dim

    def set_standardisation(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Per-member ``(E, width)`` statistics of the member's training inputs."""
        self.shift.copy_(mean.unsqueeze(1))
        self.scale.copy_(1 / std.clamp_min(1e-5).unsqueeze(1))

    def standardise(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.shift) * self.scale

    def forward(self, batch: PackedBatch) -> torch.Tensor:
        """Logits ``(E, B, classes)``."""
        raise NotImplementedError


class MeanPool(EnsembleHead):
    name = "mean_pool"
    pools_first = True

    def __init__(self, generators, in_dim, n_classes, dropout=DEFAULT_DROPOUT):
        super().__init__(generators, in_dim, n_classes, dropout)
        self.classifier = EnsembleLinear(generators, in_dim, n_classes)

    def forward(self, batch: PackedBatch) -> torch.Tensor:
        return self.classifier(self.dropout(self.standardise(batch.pooled)))


class MeanMaxPool(EnsembleHead):
    name = "meanmax_pool"
    pools_first = True

    def __init__(self, generators, in_dim, n_classes, dropout=DEFAULT_DROPOUT):
        super().__init__(generators, in_dim, n_classes, dropout)
        self.classifier = EnsembleLinear(generators, 2 * in_dim, n_classes)

    @classmethod
    def input_width(cls, in_dim: int) -> int:
        return 2 * in_dim

    def forward(self, batch: PackedBatch) -> torch.Tensor:
        return self.classifier(self.dropout(self.standardise(batch.pooled)))


def segment_sum(values: torch.Tensor, segments: torch.Tensor, n_slots: int) -> torch.Tensor:
    """Sum ``(E, N, H)`` rows into ``(E, n_slots, H)`` by segment; the spare padding slot is dropped."""
    out = values.new_zeros(values.shape[0], n_slots + 1, values.shape[2])
    out.scatter_add_(1, segments.unsqueeze(-1).expand_as(values), values)
    return out[:, :n_slots]


def segment_mean(values: torch.Tensor, segments: torch.Tensor, n_slots: int) -> torch.Tensor:
    ones = values.new_ones(values.shape[0], values.shape[1], 1)
    counts = segment_sum(ones, segments, n_slots).clamp_min(1)
    return segment_sum(values, segments, n_slots) / counts


class AttnPool(EnsembleHead):
    name = "attn_pool"

    def __init__(self, generators, in_dim, n_classes, dropout=DEFAULT_DROPOUT):
        super().__init__(generators, in_dim, n_classes, dropout)
        self.score = EnsembleLinear(generators, in_dim, 1)
        self.classifier = EnsembleLinear(generators, in_dim, n_classes)

    def forward(self, batch: PackedBatch) -> torch.Tensor:
        x = self.standardise(batch.frames)
        scores = self.score(x).squeeze(-1)  # (E, N)
        n_members, n_frames = scores.shape
        slots = batch.n_slots + 1
        peak = scores.new_full((n_members, slots), float("-inf"))
        peak = peak.scatter_reduce(1, batch.segments, scores.detach(), reduce="amax", include_self=True)
        weights = torch.exp(scores - peak.gather(1, batch.segments))
        totals = weights.new_zeros(n_members, slots).scatter_add(1, batch.segments, weights)
        weights = weights / totals.gather(1, batch.segments)
        pooled = segment_sum(x * weights.unsqueeze(-1), batch.segments, batch.n_slots)
        return self.classifier(self.dropout(pooled))


class MLPPool(EnsembleHead):
    name = "mlp_pool"

    def __init__(self, generators, in_dim, n_classes, dropout=DEFAULT_DROPOUT, depth=None, width=None):
        super().__init__(generators, in_dim, n_classes, dropout)
        default_depth, default_width = mlp_shape(in_dim)
        self.depth, self.width = depth or default_depth, width or default_width
        widths = [in_dim] + [self.width] * self.depth
        self.layers = nn.ModuleList(EnsembleLinear(generators, a, b) for a, b in zip(widths[:-1], widths[1:], strict=True))
        self.layer_dropout = nn.ModuleList(EnsembleDropout(generators, dropout) for _ in range(self.depth))
        self.classifier = EnsembleLinear(generators, self.width, n_classes)

    def forward(self, batch: PackedBatch) -> torch.Tensor:
        x = self.standardise(batch.frames)
        for layer, dropout in zip(self.layers, self.layer_dropout, strict=True):
            x = dropout(torch.relu(layer(x)), batch.frame_counts)
        return self.classifier(segment_mean(x, batch.segments, batch.n_slots))


HEADS: dict[str, type[EnsembleHead]] = {head.name: head for head in (MeanPool, MeanMaxPool, AttnPool, MLPPool)}
#: The reference head, trained with scikit-learn rather than as an ensemble.
LOGREG = "logreg"
#: Heads for one feature set: Table 1 of the paper, plus the reference.
ACOUSTIC_HEADS = (*HEADS, LOGREG)
#: The bimodal alignment model and its single-modality ablations (budget.bimodal), on audio + text pairs.
BIMODAL_HEADS = ("align_lstm", "align_lstm_audio", "align_lstm_text")
ALL_HEADS = (*ACOUSTIC_HEADS, *BIMODAL_HEADS)


def check_head(name: str) -> str:
    """The head's name, or a clear error listing the choices."""
    if name not in ALL_HEADS:
        raise BudgetError(f"unknown model {name!r}; choose from {', '.join(ALL_HEADS)}")
    return name
