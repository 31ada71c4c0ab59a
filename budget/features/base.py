"""What every feature extractor is: a named spec, an identity, batches, and frames out.

An extractor turns a batch of inputs (16 kHz waves, or transcripts) into one
float32 array per input, shaped ``(frames, dim)``, or ``(frames, layers, dim)``
when it keeps several hidden states.  Its :meth:`~FeatureExtractor.identity`
names everything its output depends on, cheaply and without loading a model,
so the feature store can key on it.
"""

from __future__ import annotations

import hashlib
import re
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np

from budget.errors import BudgetError

Modality = Literal["audio", "text"]
PRECISIONS = ("fp32", "bf16", "fp16")


class FeatureExtractor(ABC):
    """A feature extractor, configured by its spec string (``lld``, ``hf:PATH:8``...)."""

    #: What the extractor reads from the manifest.
    modality: ClassVar[Modality] = "audio"
    #: Bumped whenever a code change alters the features, so old stores are never served.
    version: ClassVar[int] = 1
    #: Frames per second of output (``None`` for text tokens).
    frame_rate: float | None = None
    #: Attributes that hold a loaded model: left out when the extractor is pickled (a Ray worker loads its own).
    loaded_attributes: ClassVar[tuple[str, ...]] = ()

    def __init__(self, spec: str):
        self.spec = spec
        self.device = "cpu"
        self.precision = "fp32"

    @property
    def pads_exactly(self) -> bool:
        """True when padding a batch leaves every utterance's output unchanged.

        Extractors that normalise over time (group norm) see the padding, so
        they are only batched with inputs of exactly the same length; the
        features then never depend on which utterances shared a batch.
        """
        return True

    def configure(self, device: str = "auto", precision: str = "fp32") -> FeatureExtractor:
        """Choose where and in which precision the model runs (before the first call)."""
        if precision not in PRECISIONS:
            raise BudgetError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
        self.device = resolve_device(device)
        self.precision = precision
        return self

    def load(self) -> None:  # noqa: B027 (extractors without a model have nothing to load)
        """Load the model now, once: a model that cannot be loaded raises :class:`~budget.errors.ModelLoadError`
        before any utterance is extracted.  Extractors without a model have nothing to load."""

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        for name in self.loaded_attributes:
            state[name] = None
        return state

    def shared_pass_key(self) -> object | None:
        """Extractors with the same key compute their features from one forward pass (see :meth:`sharing_pass`);
        None: this one shares with none."""
        return None

    def sharing_pass(self, group: list[FeatureExtractor]) -> FeatureExtractor:
        """One extractor whose output holds every member's features side by side, ``(frames, member, dim)``."""
        raise NotImplementedError

    @abstractmethod
    def identity(self) -> dict[str, object]:
        """Everything the features depend on, as JSON-able values (no model load)."""

    def extract(self, inputs: list) -> list[np.ndarray]:
        """Features for a batch: one float32 array per input.

        Where padding would change the output, inputs of different lengths
        are run in separate equal-length groups.
        """
        if self.pads_exactly or len({len(x) for x in inputs}) <= 1:
            return self._extract(inputs)
        outputs: list[np.ndarray | None] = [None] * len(inputs)
        for length in dict.fromkeys(len(x) for x in inputs):
            group = [i for i, x in enumerate(inputs) if len(x) == length]
            for i, out in zip(group, self._extract([inputs[i] for i in group]), strict=True):
                outputs[i] = out
        return outputs

    @abstractmethod
    def _extract(self, inputs: list) -> list[np.ndarray]:
        """Features for a batch the extractor can run as one."""

    def layer_names(self) -> list[str] | None:
        """Names of the stored layers when the output has a layer axis, else ``None``."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r})"


def resolve_device(device: str) -> str:
    """``auto`` picks CUDA when present; ``cuda`` without a GPU is an error."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device != "cpu" and not re.fullmatch(r"cuda(:[0-9]+)?", device):
        raise BudgetError(f"device must be auto, cpu or cuda[:N]; got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BudgetError("--device cuda was asked for, but torch sees no CUDA device (use --device cpu or auto)")
    if device.startswith("cuda:") and int(device[5:]) >= torch.cuda.device_count():
        raise BudgetError(f"--device {device}: torch sees {torch.cuda.device_count()} CUDA device(s), numbered from 0")
    return device


def torch_dtype(precision: str):
    """The torch dtype of a precision name."""
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


_weights_digest_cache: dict[tuple[str, int, int], str] = {}


def weights_digest(paths: list[Path]) -> str:
    """sha256 over the given weight files' contents, memoised on (path, size, mtime)."""
    total = hashlib.sha256()
    for path in sorted(paths):
        stat = path.stat()
        memo = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        if memo not in _weights_digest_cache:
            digest = hashlib.sha256()
            with path.open("rb") as handle:
                while block := handle.read(1 << 22):
                    digest.update(block)
            _weights_digest_cache[memo] = digest.hexdigest()
        total.update(_weights_digest_cache[memo].encode())
    return total.hexdigest()


def length_batches(lengths: list[int], max_items: int, max_total: int, exact: bool) -> list[list[int]]:
    """Group indices into batches of similar length, longest first.

    A batch holds at most ``max_items`` inputs and at most ``max_total``
    padded samples (items times the longest).  With ``exact``, a batch only
    holds inputs of identical length.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        longest = lengths[current[0]] if current else lengths[i]
        fits = len(current) < max_items and longest * (len(current) + 1) <= max_total
        if current and (not fits or (exact and lengths[i] != longest)):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches
