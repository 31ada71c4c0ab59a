"""fairseq wav2vec 1.0 (Schneider et al. 2019) in plain PyTorch: ``wav2vec1:<checkpoint.pt>``.

Boigne et al. 2020 use the context network's output of ``wav2vec_large.pt``:
512-d, 100 frames/s.  fairseq does not import on Python 3.11, so the model is
rebuilt here from the checkpoint's hyper-parameters (``args``) and state
dict.  Only the two parts that make features are built:

* the feature encoder: strided 1-d convolutions without bias, each followed by
  a one-group group norm and the activation, optional skip connections
  between equal-width layers (the residual subsampled in time), and
  optionally ``log(1 + |z|)`` compression at the end;
* the context network (the "aggregator"): causal convolutions (left padding
  by replication, or zeros) with group norm and activation, and skip
  connections scaled by ``sqrt(residual_scale)``, through a 1x1 projection
  where the width changes.

The prediction heads (``wav2vec_predictions.*``) are not needed for features
and are ignored.  ``tests/fixtures/wav2vec1`` holds small random checkpoints
with fairseq's own outputs, which this implementation must reproduce.

**Nothing in a checkpoint runs.**  A ``.pt`` file is a pickle, and a pickle can
name any function to call while it is read.  Checkpoints are read with
PyTorch's restricted unpickler (``weights_only=True``), which builds tensors and
plain containers only, plus an allow-list of what fairseq's 2019 training
checkpoints (``wav2vec_large.pt``) hold besides: the hyper-parameters as an
``argparse.Namespace`` and the trainer's meters (``fairseq.meters.*``, read
back as inert attribute holders, since fairseq is not imported).  A file that
names anything else is refused before any of it runs.
"""

from __future__ import annotations

import argparse
import ast
import math
import pickle
import re
from pathlib import Path

import numpy as np
import torch
from torch import nn

from budget.errors import BudgetError, ModelLoadError
from budget.features.base import FeatureExtractor, torch_dtype, weights_digest

# fairseq's defaults for the options the feature path uses
_DEFAULTS = {
    "conv_feature_layers": "[(512, 10, 5), (512, 8, 4), (512, 4, 2), (512, 4, 2), (512, 4, 2), (512, 1, 1), (512, 1, 1), (512, 1, 1)]",
    "conv_aggregator_layers": "[(512, 2, 1), (512, 3, 1), (512, 4, 1), (512, 5, 1), (512, 6, 1), (512, 7, 1), (512, 8, 1), (512, 9, 1), (512, 10, 1), (512, 11, 1), (512, 12, 1), (512, 13, 1)]",
    "aggregator": "cnn",
    "no_conv_bias": False,
    "agg_zero_pad": False,
    "skip_connections_feat": False,
    "skip_connections_agg": True,
    "residual_scale": 0.5,
    "log_compression": True,
    "non_affine_group_norm": False,
    "activation": "relu",
    "vq_type": "none",
}


#: The trainer's meters a fairseq training checkpoint keeps in ``extra_state['train_meters']``.
FAIRSEQ_METERS = ("AverageMeter", "TimeMeter", "StopwatchMeter")


class _FairseqMeter:
    """A fairseq training meter read back as its attributes alone (no method of it runs; its values are unused)."""


#: What the restricted unpickler may build besides tensors and containers: by class, or under fairseq's name.
CHECKPOINT_GLOBALS = [
    argparse.Namespace,
    *[(type(name, (_FairseqMeter,), {}), f"fairseq.meters.{name}") for name in FAIRSEQ_METERS],
]


def read_checkpoint(path: str | Path) -> dict:
    """A fairseq checkpoint's contents, read without running anything it names (see the module doc).

    Raises :class:`~budget.errors.ModelLoadError`: an unreadable file, or one that names a global outside
    :data:`CHECKPOINT_GLOBALS`, stops an extraction with one error.
    """
    import torch

    try:
        with torch.serialization.safe_globals(CHECKPOINT_GLOBALS):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if named := re.search(r"GLOBAL ([\w.]+)", str(error)):
            raise ModelLoadError(
                f"refused wav2vec checkpoint {path}: it names {named.group(1)}, which a wav2vec 1.0 checkpoint does not "
                "hold, and reading it could run code; nothing in the file was run (a checkpoint may hold only tensors, "
                "containers, argparse.Namespace and fairseq's meters)"
            ) from None
        detail = re.search(r"WeightsUnpickler error:\s*(.*?)\s*(?:Check the documentation|$)", str(error), re.S)
        reason = " ".join((detail.group(1) if detail else str(error)).split())
        raise ModelLoadError(f"cannot read wav2vec checkpoint {path}: not a PyTorch checkpoint ({reason})") from None
    except Exception as error:  # a damaged file breaks the unpickler in many ways (EOFError, IndexError, ...)
        raise ModelLoadError(f"cannot read wav2vec checkpoint {path}: {type(error).__name__}: {error}") from error
    if not isinstance(checkpoint, dict) or "model" not in checkpoint:
        raise ModelLoadError(f"{path} is not a fairseq checkpoint (no 'model' state dict)")
    return checkpoint


class _GroupNorm32(nn.GroupNorm):
    """One-group group norm computed in float32, whatever the input dtype (as fairseq does)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight.float() if self.weight is not None else None
        bias = self.bias.float() if self.bias is not None else None
        return nn.functional.group_norm(x.float(), self.num_groups, weight, bias, self.eps).type_as(x)


class _ConvBlock(nn.Module):
    def __init__(self, n_in, n_out, kernel, stride, bias, affine, activation, left_pad=0, zero_pad=False):
        super().__init__()
        self.left_pad = left_pad
        self.zero_pad = zero_pad
        self.conv = nn.Conv1d(n_in, n_out, kernel, stride=stride, bias=bias)
        self.norm = _GroupNorm32(1, n_out, affine=affine)
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.left_pad:
            x = nn.functional.pad(x, (self.left_pad, 0), mode="constant" if self.zero_pad else "replicate")
        return self.activation(self.norm(self.conv(x)))


class Wav2Vec1(nn.Module):
    """The feature encoder and context network of a wav2vec 1.0 checkpoint."""

    def __init__(self, args: dict):
        super().__init__()
        options = {**_DEFAULTS, **args}
        if options["aggregator"] != "cnn":
            raise BudgetError(f"wav2vec1: only the convolutional aggregator is supported, not {options['aggregator']!r}")
        if options.get("vq_type") not in (None, "none"):
            raise BudgetError("wav2vec1: vq-wav2vec checkpoints (quantised features) are not supported")
        activation = {"relu": nn.ReLU(), "gelu": nn.GELU()}[options["activation"]]
        affine = not options["non_affine_group_norm"]
        self.residual_scale = math.sqrt(options["residual_scale"])
        self.log_compression = options["log_compression"]
        self.skip_feat = options["skip_connections_feat"]
        self.skip_agg = options["skip_connections_agg"]

        encoder_layers = _layers(options["conv_feature_layers"])
        self.encoder = nn.ModuleList()
        width = 1
        for dim, kernel, stride in encoder_layers:
            self.encoder.append(_ConvBlock(width, dim, kernel, stride, False, affine, activation))
            width = dim
        self.encoder_strides = [(kernel, stride) for _, kernel, stride in encoder_layers]

        self.context = nn.ModuleList()
        self.projections = nn.ModuleDict()
        for i, (dim, kernel, stride) in enumerate(_layers(options["conv_aggregator_layers"])):
            if self.skip_agg and dim != width:
                self.projections[str(i)] = nn.Conv1d(width, dim, 1, bias=False)
            self.context.append(
                _ConvBlock(
                    width, dim, kernel, stride, not options["no_conv_bias"], affine, activation,
                    left_pad=kernel - 1, zero_pad=options["agg_zero_pad"],
                )  # fmt: skip
            )
            width = dim
        self.dim = width

    def n_frames(self, n_samples: int) -> int:
        """Context frames for an input of ``n_samples`` samples."""
        for kernel, stride in self.encoder_strides:
            n_samples = (n_samples - kernel) // stride + 1
        return max(n_samples, 0)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """``(batch, samples)`` to context features ``(batch, frames, dim)``."""
        x = wave.unsqueeze(1)
        for block in self.encoder:
            residual = x
            x = block(x)
            if self.skip_feat and x.size(1) == residual.size(1):
                step = residual.size(2) // x.size(2)
                x = (x + residual[..., ::step][..., : x.size(2)]) * self.residual_scale
        if self.log_compression:
            x = torch.log1p(x.abs())
        for i, block in enumerate(self.context):
            residual = x
            x = block(x)
            if self.skip_agg:
                if str(i) in self.projections:
                    residual = self.projections[str(i)](residual)
                x = (x + residual) * self.residual_scale
        return x.transpose(1, 2)

    @classmethod
    def from_checkpoint(cls, path: str | Path) -> Wav2Vec1:
        """Build and load a model from a fairseq checkpoint (no fairseq needed, nothing in the file run)."""
        checkpoint = read_checkpoint(path)
        try:
            model = cls(checkpoint_args(checkpoint, path))
            missing = model.load_fairseq_state(checkpoint["model"])
        except ModelLoadError:
            raise
        except BudgetError as error:  # a checkpoint this code cannot build stops the extraction, as one it cannot read
            raise ModelLoadError(str(error)) from None
        if missing:
            raise ModelLoadError(f"{path}: checkpoint lacks weights {', '.join(missing[:5])}")
        return model.eval()

    def load_fairseq_state(self, state: dict[str, torch.Tensor]) -> list[str]:
        """Load fairseq parameter names into this module; return the names still missing."""
        renamed = {}
        for name, tensor in state.items():
            parts = name.split(".")
            if parts[0] == "feature_extractor" and parts[1] == "conv_layers":
                # conv_layers.{i}.0 conv, .1 dropout, .2 group norm, .3 activation
                part = {"0": "conv", "2": "norm"}[parts[3]]
                renamed[f"encoder.{parts[2]}.{part}.{parts[4]}"] = tensor
            elif parts[0] == "feature_aggregator" and parts[1] == "conv_layers":
                # conv_layers.{i}.0 padding, .1 conv, .2 dropout, .3 group norm, .4 activation
                part = {"1": "conv", "3": "norm"}[parts[3]]
                renamed[f"context.{parts[2]}.{part}.{parts[4]}"] = tensor
            elif parts[0] == "feature_aggregator" and parts[1] == "residual_proj":
                renamed[f"projections.{parts[2]}.{parts[3]}"] = tensor
        result = self.load_state_dict(renamed, strict=False)
        if result.unexpected_keys:
            raise BudgetError(f"unexpected wav2vec weights: {', '.join(result.unexpected_keys[:5])}")
        return list(result.missing_keys)


def checkpoint_args(checkpoint: dict, path: str | Path) -> dict:
    """The model hyper-parameters of a checkpoint: old-style ``args`` or new-style ``cfg['model']``."""
    args = checkpoint.get("args")
    if args is None and checkpoint.get("cfg") is not None:
        args = checkpoint["cfg"]["model"]
    if args is None:
        raise BudgetError(f"{path}: checkpoint has neither 'args' nor 'cfg'")
    options = dict(vars(args)) if not isinstance(args, dict) else dict(args)
    arch = options.get("arch") or options.get("_name")
    if arch not in (None, "wav2vec"):
        raise BudgetError(f"{path}: a {arch!r} checkpoint, not wav2vec 1.0 (use hf: for wav2vec 2.0)")
    return {key: options[key] for key in _DEFAULTS if key in options}


def _layers(text: str) -> list[tuple[int, int, int]]:
    layers = ast.literal_eval(text) if isinstance(text, str) else text
    return [tuple(int(v) for v in layer) for layer in layers]


class Wav2Vec1Extractor(FeatureExtractor):
    """``wav2vec1:<checkpoint.pt>``: context features of a fairseq wav2vec 1.0 model."""

    frame_rate = 100.0

    def __init__(self, spec: str, checkpoint: str):
        super().__init__(spec)
        self.checkpoint = Path(checkpoint).expanduser()
        if not self.checkpoint.is_file():
            raise BudgetError(f"wav2vec checkpoint {checkpoint} not found")
        self._model: Wav2Vec1 | None = None

    @property
    def pads_exactly(self) -> bool:
        return False  # group norm over time sees padding

    def identity(self) -> dict[str, object]:
        return {
            "kind": "wav2vec1",
            "checkpoint": self.checkpoint.name,
            "weights_sha256": weights_digest([self.checkpoint]),
            "precision": self.precision,
            "version": self.version,
        }

    loaded_attributes = ("_model",)

    def load(self) -> None:
        if self._model is None:
            self._model = Wav2Vec1.from_checkpoint(self.checkpoint).to(self.device, torch_dtype(self.precision))

    def _extract(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        self.load()
        frames = [self._model.n_frames(len(wave)) for wave in inputs]
        if min(frames) <= 0:
            raise BudgetError("an input is shorter than the model's receptive field")
        batch = torch.zeros(len(inputs), max(len(w) for w in inputs))
        for i, wave in enumerate(inputs):
            batch[i, : len(wave)] = torch.from_numpy(wave)
        with torch.inference_mode():
            context = self._model(batch.to(self.device, torch_dtype(self.precision))).float().cpu().numpy()
        return [np.ascontiguousarray(context[i, :n]) for i, n in enumerate(frames)]
