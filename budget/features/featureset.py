"""The features of a corpus's utterances, in memory: what training reads."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from budget.errors import BudgetError


@dataclass
class FeatureSet:
    """Features of a manifest's utterances, in manifest order, ready for training.

    ``frames[offsets[i] : offsets[i] + lengths[i]]`` is utterance ``i``;
    ``mean`` and ``max`` are its pooled statistics.  ``frames`` is None where
    only the statistics were loaded (every head of the study pools first).  ``stacked`` > 1: each
    frame holds that many hidden states of an encoder side by side (layer-major),
    for a head that learns their weights (a ``:weighted`` feature set).  Utterances with no
    features (failed or never extracted) are left out and named in ``missing``.
    """

    spec: str
    utt_ids: np.ndarray
    lengths: np.ndarray
    offsets: np.ndarray
    frames: np.ndarray | None
    mean: np.ndarray
    max: np.ndarray
    layer_names: list[str] | None = None
    missing: list[str] = field(default_factory=list)
    stacked: int = 1

    def __len__(self) -> int:
        return len(self.utt_ids)

    @property
    def dim(self) -> int:
        return int(self.mean.shape[-1])

    @property
    def layer_dim(self) -> int:
        """The width of one stacked hidden state (the whole frame when one is stored)."""
        return self.dim // self.stacked

    def sequence(self, i: int) -> np.ndarray:
        """The frames of utterance ``i``."""
        if self.frames is None:
            raise BudgetError(f"{self.spec}: loaded without frames (its statistics only)")
        return self.frames[self.offsets[i] : self.offsets[i] + self.lengths[i]]

    def select(self, utt_ids) -> FeatureSet:
        """The features of ``utt_ids``, in that order (each must be present)."""
        position = {u: i for i, u in enumerate(self.utt_ids)}
        rows = np.array([position[u] for u in utt_ids], dtype=np.int64)
        lengths = self.lengths[rows]
        if self.frames is None:
            frames = None
        else:
            pieces = [self.sequence(i) for i in rows]
            frames = np.concatenate(pieces) if pieces else self.frames[:0]
        return FeatureSet(
            spec=self.spec,
            utt_ids=self.utt_ids[rows],
            lengths=lengths,
            offsets=np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64),
            frames=frames,
            mean=self.mean[rows],
            max=self.max[rows],
            layer_names=self.layer_names,
            stacked=self.stacked,
        )
