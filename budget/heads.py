"""Classifier heads, each an *ensemble*: E independent models advanced in one step.

(One file for the four heads: they share the base class, the packed batch and the dropout hash below.)

A budget study is hundreds of small trainings.  Every head here holds its
parameters with a leading member axis (``(E, in, out)`` weights) and runs all
members with batched matrix products, so one optimiser step trains them all.
Members never mix: each has its own initialisation, data, dropout masks and
loss term, and Adam is element-wise, so a member trained inside an ensemble
follows the path it would follow alone.

Frame-level heads read *packed* batches: each member's utterances laid end to
end, ``frames`` ``(E, W, D)``, with ``members`` ``(E, B, W)`` marking which
frames belong to which of the member's B utterance slots.  Pooling is then a
batched matrix product with that membership (deterministic on every device,
unlike scatter-adds), and no utterance is padded to the longest.

Heads (Boigne et al. 2020):

``mean_pool``      mean over frames, dropout, linear
``meanmax_pool``   mean and max over frames concatenated, dropout, linear
``attn_pool``      a logistic-regression score per frame, softmax over the
                   utterance's frames, weighted mean, dropout, linear
``mlp_pool``       an MLP shared across frames (dropout after each layer),
                   mean over frames, linear

``mean_pool`` and ``meanmax_pool`` pool before any learned layer, so they
train on the store's pooled statistics: the same function, far cheaper.

Heads marked ``full_batch`` (the pooled heads and ``attn_pool``) can also
compute every member's logits for the same rows at once (``shared_logits``),
with each member's standardisation folded into its weights: the form the
trainer fits to an optimum by L-BFGS (:mod:`budget.engine.lbfgs`).

**Dropout without per-member generators.**  A mask element is a hash of
(member key, step, layer, position in the member's batch, unit): a
counter-based generator, computed on the device in one pass for the whole
ensemble, that no other member can shift.  Each 32-bit hash gives four 8-bit
draws, so the keep probability is rounded to 1/256 (0.8 becomes 205/256) and
the kept values are scaled by its inverse.

Inputs are standardised per member with statistics of that member's own
training subset (never the test fold), held as buffers.

**mlp_pool's step touches each activation as few times as it can.**  Its
frames arrive centred on the corpus mean in the product dtype
(:meth:`budget.engine.packed.DeviceFeatures.centred`), and the member's
standardisation is folded into the first layer's weights, so no pass
standardises them.  ReLU and dropout run in place as one autograd function
whose backward reads only its output, and dropout's 1/keep is folded into the
next layer's weights, so the mask is plain 0/1 and is never kept for the
backward pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from budget.errors import BudgetError

DEFAULT_DROPOUT = 0.2
#: mlp_pool capacity target: the MLP gets about this many parameters whatever the input width.
MLP_PARAMETERS = 196_608
MLP_WIDTH = 256
MLP_MAX_DEPTH = 4

_MASK32 = 0xFFFFFFFF
_MIX = 0x045D9F3B  # a 32-bit integer hash's multiplier (below 2**31, so an int32 constant)


def _hash32_(bits: torch.Tensor) -> torch.Tensor:
    """The 32-bit integer hash of int32 tensors holding unsigned 32-bit values, in place.

    int32 products wrap modulo 2**32, which is the hash's arithmetic; the
    right shifts are made logical by masking the sign's copies.  Half the
    memory traffic of int64 and no temporaries but one per round: the mask
    of every dropout layer goes through here each step.
    """
    for _ in range(2):
        bits.bitwise_xor_(torch.bitwise_right_shift(bits, 16).bitwise_and_(0xFFFF)).mul_(_MIX)
    return bits.bitwise_xor_(torch.bitwise_right_shift(bits, 16).bitwise_and_(0xFFFF))


def hash32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash of int64 values in [0, 2**32), elementwise."""
    return _hash32_(x.to(torch.int32)).to(torch.int64) & _MASK32


@dataclass
class DropoutKeys:
    """What a training step's dropout masks are keyed by: each member's key and the step number."""

    members: torch.Tensor  # (E,) int64 in [0, 2**32), on the device
    step: int

    def layer_keys(self, layer: int) -> torch.Tensor:
        salt = int(hash32(torch.tensor(self.step * 64 + layer + 1)))
        return hash32(self.members ^ salt)


def _draws(keys: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """Uniform 8-bit draws ``(E, M, H)`` for per-member keys ``(E,)``: four bytes of each 32-bit hash."""
    n_members, rows, units = shape
    quads = math.ceil(rows * units / 4)
    counter = torch.arange(quads, device=keys.device, dtype=torch.int32)
    draws = _hash32_(keys.to(torch.int32).view(-1, 1) ^ counter).view(torch.uint8)
    return draws[:, : rows * units].view(n_members, rows, units)


def _threshold(p: float) -> int:
    """The draws below which dropout drops: ``p`` rounded to 1/256, at most 255 so a unit is sometimes kept."""
    return min(round(p * 256), 255)


def keep_mask(keys: torch.Tensor, shape: tuple[int, int, int], p: float) -> tuple[torch.Tensor, float]:
    """A boolean keep-mask ``(E, M, H)`` for per-member keys ``(E,)``, and the exact keep probability."""
    threshold = _threshold(p)
    return _draws(keys, shape) >= threshold, 1 - threshold / 256


def keep_ones(keys: torch.Tensor, shape: tuple[int, int, int], p: float, dtype: torch.dtype) -> tuple[torch.Tensor, float]:
    """:func:`keep_mask` as 0/1 in ``dtype``, and the exact keep probability.

    Made in uint8 by a clamp rather than a comparison: CPU kernels turn bool
    into floats, and mask with bools, several times slower than bytes.
    """
    threshold = _threshold(p)
    draws = _draws(keys, shape)
    kept = draws.clamp_(threshold - 1, threshold).sub_(threshold - 1) if threshold else torch.ones_like(draws)
    return kept.to(dtype), 1 - threshold / 256


def keep_multiplier(keys: torch.Tensor, shape: tuple[int, int, int], p: float, dtype: torch.dtype) -> torch.Tensor:
    """Dropout's multiplier ``(E, M, H)`` in ``dtype``: 1/keep where :func:`keep_mask` keeps, else 0."""
    ones, keep = keep_ones(keys, shape, p, dtype)
    return ones.mul_(1 / keep)


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


@dataclass
class PackedBatch:
    """One training or test batch for every member of an ensemble."""

    n_slots: int  # B utterance slots per member
    pooled: torch.Tensor | None = None  # (E, B, F): pooled statistics, for heads that pool first
    frames: torch.Tensor | None = None  # (E, W, D): frames of the batch's utterances, end to end
    members: torch.Tensor | None = None  # (E, B, W): 1 where frame w belongs to slot b
    counts: torch.Tensor | None = None  # (E, B): frames per slot (0 for an empty slot)
    keys: DropoutKeys | None = None  # None: no dropout (evaluation)


class EnsembleLinear(nn.Module):
    """E independent linear layers; each member initialised as ``nn.Linear`` is, from its own generator."""

    def __init__(self, generators: list[torch.Generator], in_dim: int, out_dim: int):
        super().__init__()
        bound = 1 / math.sqrt(in_dim)
        weight = torch.empty(len(generators), in_dim, out_dim)
        bias = torch.empty(len(generators), out_dim)
        for e, generator in enumerate(generators):  # once per ensemble, not per step
            weight[e].uniform_(-bound, bound, generator=generator)
            bias[e].uniform_(-bound, bound, generator=generator)
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(E, M, in)`` to ``(E, M, out)``."""
        return affine(x, self.weight, self.bias.unsqueeze(1))


def affine(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``x @ weight + bias`` for every member at once: ``(E, M, in)``, ``(E, in, out)``, ``(E, 1, out)``, in x's dtype."""
    return torch.baddbmm(bias.to(x.dtype), x, weight.to(x.dtype))


class EnsembleDropout(nn.Module):
    """Dropout whose mask is a counter-based hash of (member, step, this layer, position, unit)."""

    def __init__(self, p: float, layer: int):
        super().__init__()
        self.p = p
        self.layer = layer

    def forward(self, x: torch.Tensor, keys: DropoutKeys | None) -> torch.Tensor:
        if not self.training or self.p == 0 or keys is None:
            return x
        return x * keep_multiplier(keys.layer_keys(self.layer), tuple(x.shape), self.p, x.dtype)

    def keep(self, shape: tuple[int, int, int], keys: DropoutKeys | None, dtype: torch.dtype) -> tuple[torch.Tensor | None, float]:
        """The 0/1 mask for activations of ``shape`` and the 1/keep that kept values need; (None, 1) when not dropping."""
        if not self.training or self.p == 0 or keys is None:
            return None, 1.0
        ones, keep = keep_ones(keys.layer_keys(self.layer), shape, self.p, dtype)
        return ones, 1 / keep


class _ReluDropout(torch.autograd.Function):
    """``relu(h) * keep`` in place on ``h`` for a 0/1 ``keep`` (or None): its gradient needs only the output,
    since an output is positive exactly where the unit was both active and kept."""

    @staticmethod
    def forward(ctx, h: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        out = h.clamp_min_(0)
        if keep is not None:
            out.mul_(keep)
        ctx.mark_dirty(h)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (out,) = ctx.saved_tensors
        return torch.ops.aten.threshold_backward(grad, out, 0), None


def relu_dropout(h: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    """``relu(h) * keep``, computed in place on ``h`` (a fresh product nothing else reads)."""
    return _ReluDropout.apply(h, keep)


class LayerMix(nn.Module):
    """Softmax-normalised weights over an encoder's stacked hidden states, one set per member (the weighted sum of
    SUPERB's probing protocol).  Zero logits at the start: every layer weighs the same."""

    def __init__(self, n_members: int, layers: int):
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(n_members, layers))

    def weights(self) -> torch.Tensor:
        """``(E, stacked)``, each row summing to 1, in float32."""
        return torch.softmax(self.logits.float(), dim=-1)


class EnsembleHead(nn.Module):
    """Base of the heads: per-member input standardisation and the classifier layer.

    ``stacked`` > 1: the inputs are that many hidden states side by side
    (layer-major, ``in_dim`` each), each standardised, then mixed by learned
    weights (:class:`LayerMix`) into one ``in_dim``-wide input; only heads
    whose first operation is linear in their input (``mixes_layers``) take them.
    """

    name: ClassVar[str]
    pools_first: ClassVar[bool] = False
    pooled_kind: ClassVar[str] = ""  # the stored statistics a head that pools first reads: mean, or meanmax
    full_batch: ClassVar[bool] = False  # has shared_logits and penalties: can be fitted full-batch to an optimum
    frame_mean: ClassVar[bool] = False  # averages a per-frame function over frames: a sample of frames estimates it
    mixes_layers: ClassVar[bool] = False  # can learn weights over stacked hidden states (stacked > 1)

    def __init__(self, generators: list[torch.Generator], in_dim: int, n_classes: int, dropout: float, stacked: int = 1):
        super().__init__()
        if stacked > 1 and not self.mixes_layers:
            raise BudgetError(f"{self.name} reads one layer; learned layer weights train with "
                              f"{', '.join(h.name for h in HEADS.values() if h.mixes_layers)}")  # fmt: skip
        self.n_members = len(generators)
        self.in_dim = in_dim
        self.stacked = stacked
        self.register_buffer("shift", torch.zeros(self.n_members, 1, self.input_width(in_dim) * stacked))
        self.register_buffer("scale", torch.ones(self.n_members, 1, self.input_width(in_dim) * stacked))
        self.dropout = EnsembleDropout(dropout, layer=0)
        self.mix = LayerMix(self.n_members, stacked) if stacked > 1 else None

    def member_parameters(self, member: int) -> dict[str, np.ndarray]:
        """One member's parameters by name, a copy on the CPU without the member axis."""
        return {name: parameter.detach()[member].to("cpu", copy=True).numpy() for name, parameter in self.named_parameters()}

    def load_members(self, parameters: list[dict[str, np.ndarray]]) -> None:
        """Every member's parameters set to ``parameters[member]`` (as :meth:`member_parameters` gives them)."""
        with torch.no_grad():
            for name, parameter in self.named_parameters():
                parameter.copy_(torch.from_numpy(np.stack([member[name] for member in parameters])))

    def layer_weights(self) -> torch.Tensor | None:
        """Each member's learned weights over the layers ``(E, stacked)``; None for one layer."""
        return None if self.mix is None else self.mix.weights().detach()

    def coefficients(self) -> torch.Tensor:
        """What multiplies each raw input column on its way to the mixed input ``(E, 1, width * stacked)``: the
        member's standardisation scale, times its weight on the column's layer."""
        if self.mix is None:
            return self.scale
        return self.scale * self.mix.weights().repeat_interleave(self.scale.shape[-1] // self.stacked, dim=1).unsqueeze(1)

    def mixed(self, x: torch.Tensor) -> torch.Tensor:
        """Standardised inputs ``(E, M, width * stacked)`` mixed over layers to ``(E, M, width)`` (as is for one)."""
        if self.mix is None:
            return x
        n_members, rows, _ = x.shape
        weights = self.mix.weights().to(x.dtype).view(n_members, 1, self.stacked, 1)
        return (x.view(n_members, rows, self.stacked, -1) * weights).sum(2)

    @classmethod
    def input_width(cls, in_dim: int) -> int:
        """Width of what the head reads: pooled statistics or frames."""
        return in_dim

    @classmethod
    def matmul_flops(cls, in_dim: int, n_classes: int) -> int:
        """Multiply-adds per frame (or per pooled vector) of the forward pass: the cost model's unit."""
        return cls.input_width(in_dim) * n_classes

    @classmethod
    def hidden_units(cls, in_dim: int) -> int:
        """Activations a frame keeps for the backward pass across the head's hidden layers (the memory model's unit)."""
        return 1

    def set_standardisation(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Per-member ``(E, width)`` statistics of the member's training inputs."""
        self.shift.copy_(mean.unsqueeze(1))
        self.scale.copy_(1 / std.clamp_min(1e-5).unsqueeze(1))

    def standardise(self, x: torch.Tensor) -> torch.Tensor:
        """Inputs as float32, each member's standardisation applied in place on a copy (not autograd's: buffers)."""
        return x.to(torch.float32, copy=True).sub_(self.shift).mul_(self.scale)

    def forward(self, batch: PackedBatch) -> torch.Tensor:
        """Logits ``(E, B, classes)``."""
        raise NotImplementedError

    def penalties(self) -> list[tuple[nn.Parameter, float]]:
        """The weights a full-batch fit penalises, each with its strength relative to the classifier's L2."""
        return [(self.classifier.weight, 1.0)]

    def folded_classifier(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The classifier's weights ``(E, width, classes)`` and biases ``(E, 1, classes)`` on raw, unstandardised
        inputs: each member's standardisation folded in."""
        return self.folded(self.classifier)

    def folded(self, layer: EnsembleLinear) -> tuple[torch.Tensor, torch.Tensor]:
        """``layer``'s weights ``(E, in * stacked, out)`` and biases ``(E, 1, out)`` on raw inputs: each member's
        standardisation (and layer weights) folded in, differentiably (in float32 even under autocast)."""
        with torch.autocast(layer.weight.device.type, enabled=False):
            coefficients = self.coefficients()
            # row l * in + d: the weight of input d, whatever its layer (no copy for one layer: a hot path)
            stacked = layer.weight if self.stacked == 1 else layer.weight.repeat(1, self.stacked, 1)
            weight = stacked * coefficients.transpose(1, 2)
            bias = layer.bias.unsqueeze(1) - torch.bmm(self.shift * coefficients, stacked)
        return weight, bias


class MeanPool(EnsembleHead):
    name = "mean_pool"
    pools_first = True
    pooled_kind = "mean"
    full_batch = True
    mixes_layers = True

    def __init__(self, generators, in_dim, n_classes, dropout=DEFAULT_DROPOUT, stacked=1):
        super().__init__(generators, in_dim, n_classes, dropout, stacked)
        self.classifier = EnsembleLinear(generators, self.input_width(in_dim), n_classes)

    def forward(self, batch: PackedBatch) -> torch.Tensor:
        return self.classifier(self.dropout(self.mixed(self.standardise(batch.pooled)), batch.keys))

    def shared_logits(self, pooled: torch.Tensor) -> torch.Tensor:
        """Every member's logits ``(E, N, classes)`` for the same ``(N, width)`` pooled rows, without dropout.

        Each member's standardisation is folded into its weights, so the rows
        are read once for all members rather than copied per member.
        """
        weight, bias = self.folded_classifier()
        n_members, width, n_classes = weight.shape
        logits = pooled.float() @ weight.permute(1, 0, 2).reshape(width, n_members * n_classes)  # (N, E * classes)
        return logits.view(-1, n_members, n_classes).transpose(0, 1) + bias


class MeanMaxPool(MeanPool):
    name = "meanmax_pool"
    pooled_kind = "meanmax"
    mixes_layers = False  # the max of a mix is not a mix of the layers' maxima

    @classmethod
    def input_width(cls, in_dim: int) -> int:
        return 2 * in_dim


def slot_mean(values: torch.Tensor, batch: PackedBatch, scale: float = 1.0) -> torch.Tensor:
    """``scale`` times the mean of each slot's frames: ``(E, W, H)`` to ``(E, B, H)`` by one batched product."""
    weights = batch.members.to(values.dtype) * (scale / batch.counts.clamp_min(1)).unsqueeze(-1).to(values.dtype)
    return torch.bmm(weights, values)


#: A full-batch attn_pool fit penalises its frame-score weights this many times the input width more than its
#: classifier's: with standardised frames, a score's spread over an utterance's frames grows with the weights'
#: norm, and the prior keeps attention near the mean unless the data ask otherwise.  Chosen on EmoDB (README,
#: Studies): at 1x the fit's attention overfit, 9 points below mean pooling on LLDs at 6 examples per class.
ATTN_SCORE_PRIOR = 3.0


class AttnPool(EnsembleHead):
    name = "attn_pool"
    full_batch = True

    def __init__(self, generators, in_dim, n_classes, dropout=DEFAULT_DROPOUT, stacked=1):
        super().__init__(generators, in_dim, n_classes, dropout, stacked)
        self.score = EnsembleLinear(generators, in_dim, 1)
        self.classifier = EnsembleLinear(generators, in_dim, n_classes)

    @classmethod
    def matmul_flops(cls, in_dim: int, n_classes: int) -> int:
        return in_dim * 2  # the score and the weighted sum; the classifier acts per utterance

    def forward(self, batch: PackedBatch) -> torch.Tensor:
        x = self.standardise(batch.frames)
        scores = self.score(x).squeeze(-1)  # (E, W)
        belongs = batch.members.bool()
        masked = scores.unsqueeze(1).masked_fill(~belongs, float("-inf"))  # (E, B, W)
        weights = torch.softmax(masked, dim=-1).nan_to_num(0.0)  # an empty slot has no frames: zero weights
        pooled = torch.bmm(weights.to(x.dtype), x)
        return self.classifier(self.dropout(pooled, batch.keys))

    def penalties(self) -> list[tuple[nn.Parameter, float]]:
        return [(self.classifier.weight, 1.0), (self.score.weight, ATTN_SCORE_PRIOR * self.in_dim)]

    def shared_logits(self, frames: torch.Tensor, index: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """Every member's logits ``(E, N, classes)`` for the same N utterances, without dropout.

        ``frames`` ``(F, D)`` hold the utterances' frames end to end; ``index``
        ``(N, T)`` places each utterance's frames among them, where ``present``
        is true.  Scores and the classifier are both linear in a frame, so one
        product gives every frame's score and class evidence for every member
        ``(F, E, 1 + classes)``, and pooling weighs the evidence rather than the
        frames: each frame is read once forward and once backward, whatever
        the width.  A member's standardisation shifts every frame's score
        equally, which the softmax ignores, and is folded into the classifier.
        """
        score = self.score.weight.squeeze(-1) * self.scale.squeeze(1)  # (E, D)
        weight, bias = self.folded_classifier()  # (E, D, classes), (E, 1, classes)
        n_members, dim, n_classes = weight.shape
        projection = torch.cat([score.unsqueeze(1), weight.transpose(1, 2)], dim=1)  # (E, 1 + classes, D)
        # as linear's (out, in) weight: on CPU several times faster than frames @ (D, out), backward too
        evidence = torch.nn.functional.linear(frames, projection.reshape(-1, dim))  # (F, E * (1 + classes))
        evidence = evidence[index].view(*index.shape, n_members, 1 + n_classes)  # (N, T, E, 1 + classes)
        scores = evidence[..., 0].masked_fill(~present.unsqueeze(-1), float("-inf"))
        weights = torch.softmax(scores, dim=1).nan_to_num(0.0)  # (N, T, E); an utterance without frames: zeros
        return torch.einsum("nte,ntec->enc", weights, evidence[..., 1:]) + bias


class MLPPool(EnsembleHead):
    name = "mlp_pool"
    frame_mean = True
    mixes_layers = True

    def __init__(self, generators, in_dim, n_classes, dropout=DEFAULT_DROPOUT, depth=None, width=None, stacked=1):
        super().__init__(generators, in_dim, n_classes, dropout, stacked)
        default_depth, default_width = mlp_shape(in_dim)
        self.depth, self.width = depth or default_depth, width or default_width
        widths = [in_dim] + [self.width] * self.depth
        self.layers = nn.ModuleList(EnsembleLinear(generators, a, b) for a, b in zip(widths[:-1], widths[1:], strict=True))
        self.layer_dropout = nn.ModuleList(EnsembleDropout(dropout, layer=1 + i) for i in range(self.depth))
        self.classifier = EnsembleLinear(generators, self.width, n_classes)

    @classmethod
    def matmul_flops(cls, in_dim: int, n_classes: int) -> int:
        depth, width = mlp_shape(in_dim)
        return in_dim * width + (depth - 1) * width * width + width  # the last term: pooling by product

    @classmethod
    def hidden_units(cls, in_dim: int) -> int:
        depth, width = mlp_shape(in_dim)
        return depth * width

    def forward(self, batch: PackedBatch) -> torch.Tensor:
        """Logits from frames as they come (centred, in the product dtype): standardisation is folded into the
        first layer, each dropout's 1/keep into the layer after it."""
        x = batch.frames
        scale = 1.0
        for i, (layer, dropout) in enumerate(zip(self.layers, self.layer_dropout, strict=True)):
            if i == 0 and self.mix is not None:
                x, (weight, bias) = self._mixed_frames(x, layer)
            elif i == 0:
                weight, bias = self.folded(layer)
            else:  # scaled on the product dtype's copy, in place: with few frames a step the weights outnumber them
                weight, bias = layer.weight.to(x.dtype, copy=True).mul_(scale), layer.bias.unsqueeze(1)
            h = affine(x, weight, bias)
            keep, scale = dropout.keep(tuple(h.shape), batch.keys, h.dtype)
            x = relu_dropout(h, keep)
        return self.classifier(slot_mean(x, batch, scale))

    def _mixed_frames(self, frames: torch.Tensor, layer: EnsembleLinear) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Raw frames ``(E, W, in * stacked)`` mixed over layers with the standardisation folded into the mix
        ``(E, W, in)``, and the first layer's weights and bias for them: the mix costs a frame ``in * layers``
        multiply-adds, where folding it into the first layer would cost that times its width."""
        n_members, width, _ = frames.shape
        coefficients = self.coefficients()  # (E, 1, in * stacked)
        mixed = (frames.view(n_members, width, self.stacked, -1)
                 * coefficients.view(n_members, 1, self.stacked, -1).to(frames.dtype)).sum(2)  # fmt: skip
        offset = (self.shift * coefficients).view(n_members, 1, self.stacked, -1).sum(2)  # (E, 1, in)
        return mixed, (layer.weight, layer.bias.unsqueeze(1) - torch.bmm(offset, layer.weight))


#: The ensemble heads; every head a study can train (these, the reference and the bimodal ones) is in budget.registry.
HEADS: dict[str, type[EnsembleHead]] = {head.name: head for head in (MeanPool, MeanMaxPool, AttnPool, MLPPool)}
