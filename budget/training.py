"""Training: many runs of one head on one feature set, advanced together.

A *run* is one (fold, seed, size): a training subset and the held-out fold
to test on.  :func:`train_runs` trains a list of runs that share a head, a
feature set and a training-set size as one ensemble (chunked when the
ensemble would not fit the memory budget) and returns each run's test
predictions.  Each run draws its initialisation, data order and dropout from
generators seeded by the run alone, so the result of a run does not depend on
which other runs shared its ensemble.

Defaults follow Boigne et al. 2020: Adam, learning rate 1e-4, batches of 16,
dropout after each layer, a fixed number of epochs and no early stopping.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from budget.errors import BudgetError
from budget.features.store import FeatureSet
from budget.heads import DEFAULT_DROPOUT, HEADS, LOGREG, EnsembleHead, PackedBatch, mlp_shape
from budget.progress import progress_bar

EVAL_BATCH = 64


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings shared by every run of a study."""

    epochs: int = 60
    lr: float = 1e-4
    batch_size: int = 16
    dropout: float = DEFAULT_DROPOUT
    device: str = "cpu"
    memory_mb: int = 2048  # activation budget per ensemble chunk

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0 or not 0 <= self.dropout < 1:
            raise BudgetError(f"bad training settings: {self}")


@dataclass(frozen=True)
class Run:
    """One training run: positions into the feature set's rows."""

    fold: int
    seed: int
    size: int | str
    train: np.ndarray
    test: np.ndarray

    def seed_sequence(self) -> np.random.SeedSequence:
        size = -1 if self.size == "full" else int(self.size)
        return np.random.SeedSequence([self.seed, self.fold, size + 1])


class FrameInputs:
    """A feature set as tensors: pooled statistics, or float16 frames with offsets."""

    def __init__(self, features: FeatureSet, pools_first: bool, pooled_kind: str):
        self.pools_first = pools_first
        if pools_first:
            parts = [features.mean] if pooled_kind == "mean" else [features.mean, features.max]
            self.pooled = torch.from_numpy(np.concatenate(parts, axis=1).astype(np.float32))
        else:
            self.frames = torch.from_numpy(features.frames)
            self.offsets = features.offsets
            self.lengths = features.lengths
            owner = torch.from_numpy(np.repeat(np.arange(len(features)), features.lengths))
            frames64 = self.frames.double()
            zeros = torch.zeros(len(features), features.dim, dtype=torch.float64)
            self.utt_sum = zeros.index_add(0, owner, frames64).numpy()
            self.utt_sumsq = zeros.index_add(0, owner, frames64**2).numpy()

    def standardisation(self, train: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and std of one run's training inputs (pooled vectors, or all their frames)."""
        if self.pools_first:
            x = self.pooled[train].double()
            return x.mean(0).float(), x.std(0, unbiased=False).float()
        count = max(int(self.lengths[train].sum()), 1)
        mean = self.utt_sum[train].sum(0) / count
        var = np.maximum(self.utt_sumsq[train].sum(0) / count - mean**2, 0)
        return torch.from_numpy(mean).float(), torch.from_numpy(np.sqrt(var)).float()

    def batch(self, slots: list[np.ndarray], n_slots: int, device: str) -> PackedBatch:
        """Pack each member's utterance positions (up to ``n_slots`` each) into one batch."""
        if self.pools_first:
            pooled = torch.zeros(len(slots), n_slots, self.pooled.shape[1])
            for e, idx in enumerate(slots):
                pooled[e, : len(idx)] = self.pooled[idx]
            return PackedBatch(n_slots=n_slots, pooled=pooled.to(device))
        counts = [int(self.lengths[idx].sum()) for idx in slots]
        width = max(max(counts), 1)
        index = torch.zeros(len(slots), width, dtype=torch.long)
        segments = torch.full((len(slots), width), n_slots, dtype=torch.long)
        for e, idx in enumerate(slots):
            lengths = self.lengths[idx]
            starts = np.repeat(self.offsets[idx] - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
            index[e, : counts[e]] = torch.from_numpy(starts + np.arange(counts[e]))
            segments[e, : counts[e]] = torch.from_numpy(np.repeat(np.arange(len(idx)), lengths))
        frames = self.frames[index.view(-1)].view(len(slots), width, -1).float()
        return PackedBatch(n_slots=n_slots, frames=frames.to(device), segments=segments.to(device), frame_counts=counts)


def _members_per_chunk(head: str, features: FeatureSet, config: TrainConfig) -> int:
    """How many runs fit one ensemble step within ``config.memory_mb``."""
    if HEADS[head].pools_first:
        return 4096
    mean_frames = float(features.lengths.mean()) if len(features) else 1.0
    rows = config.batch_size * mean_frames * 1.5  # packed frames per member, with slack for long batches
    width = features.dim + (mlp_shape(features.dim)[0] * mlp_shape(features.dim)[1] * 3 if head == "mlp_pool" else 4)
    per_member = rows * width * 4 * 3  # inputs, activations, gradients (float32)
    return max(1, int(config.memory_mb * 2**20 // per_member))


def train_runs(
    head: str, features: FeatureSet, labels: np.ndarray, runs: list[Run], n_classes: int, config: TrainConfig
) -> list[np.ndarray]:
    """Train every run and return its predictions on its test positions.

    Runs of one call must share a training-set size.  ``labels`` are class
    indices aligned with the feature set's rows.
    """
    if not runs:
        return []
    if len({len(run.train) for run in runs}) != 1:
        raise BudgetError("runs trained together must have the same number of training examples")
    if head == LOGREG:
        return [_train_logreg(features, labels, run) for run in runs]
    inputs = FrameInputs(features, HEADS[head].pools_first, "mean" if head == "mean_pool" else "meanmax")
    chunk = _members_per_chunk(head, features, config)
    predictions: list[np.ndarray] = []
    for start in range(0, len(runs), chunk):
        predictions += _train_ensemble(head, inputs, features.dim, labels, runs[start : start + chunk], n_classes, config)
    return predictions


def _train_ensemble(head_name, inputs: FrameInputs, dim, labels, runs, n_classes, config) -> list[np.ndarray]:
    head_class = HEADS[head_name]
    seeds = [run.seed_sequence() for run in runs]
    generators = [torch.Generator().manual_seed(int(s.generate_state(1)[0])) for s in seeds]
    orders = [np.random.default_rng(s.spawn(1)[0]) for s in seeds]
    head: EnsembleHead = head_class(generators, dim, n_classes, dropout=config.dropout)
    stats = [inputs.standardisation(run.train) for run in runs]
    head.set_standardisation(torch.stack([m for m, _ in stats]), torch.stack([s for _, s in stats]))
    head.to(config.device)
    optimiser = torch.optim.Adam(head.parameters(), lr=config.lr)
    loss_fn = nn.CrossEntropyLoss(reduction="none")
    label_tensor = torch.from_numpy(labels.astype(np.int64))

    n_train = len(runs[0].train)
    steps_per_epoch = math.ceil(n_train / config.batch_size)
    head.train()
    description = f"training {head_name} x{len(runs)}"
    with progress_bar(config.epochs * steps_per_epoch, description, unit="step") as advance:
        for _ in range(config.epochs):
            permutations = [run.train[order.permutation(n_train)] for run, order in zip(runs, orders, strict=True)]
            for step in range(steps_per_epoch):
                slots = [p[step * config.batch_size : (step + 1) * config.batch_size] for p in permutations]
                batch = inputs.batch(slots, len(slots[0]), config.device)
                logits = head(batch)  # (E, B, C)
                targets = torch.stack([label_tensor[idx] for idx in slots]).to(config.device)
                loss = loss_fn(logits.reshape(-1, n_classes), targets.reshape(-1)).view(len(runs), -1).mean(1).sum()
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                advance(1)
    return _predict(head, inputs, runs, config.device)


@torch.inference_mode()
def _predict(head: EnsembleHead, inputs: FrameInputs, runs: list[Run], device: str) -> list[np.ndarray]:
    head.eval()
    outputs: list[list[np.ndarray]] = [[] for _ in runs]
    longest = max(len(run.test) for run in runs)
    for start in range(0, longest, EVAL_BATCH):
        slots = [run.test[start : start + EVAL_BATCH] for run in runs]
        logits = head(inputs.batch(slots, EVAL_BATCH, device)).cpu()
        for e, idx in enumerate(slots):
            outputs[e].append(logits[e, : len(idx)].argmax(-1).numpy())
    return [np.concatenate(parts) if parts else np.zeros(0, np.int64) for parts in outputs]


def _train_logreg(features: FeatureSet, labels: np.ndarray, run: Run) -> np.ndarray:
    """The reference: scikit-learn logistic regression on standardised mean-pooled features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    model.fit(features.mean[run.train], labels[run.train])
    return model.predict(features.mean[run.test])
