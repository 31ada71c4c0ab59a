"""The head registry: every model a study can train, what it reads and how it trains.

One protocol for all (as scikit-learn's estimators share ``fit``): a study
builds its grid of runs, asks each head's :class:`HeadSpec` what inputs it
reads, what a run costs and how many runs train together, and hands it the
runs.  No other module decides anything by a head's name.

* the ensemble heads of :mod:`budget.heads` (``mean_pool``, ``meanmax_pool``,
  ``attn_pool``, ``mlp_pool``), trained by :mod:`budget.engine`;
* ``logreg``, the reference: scikit-learn's logistic regression on pooled
  features, solved exactly, so it has no budget to check;
* the bimodal alignment model and its ablations (:mod:`budget.bimodal`), on
  audio + text pairs, one run at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from budget import bimodal
from budget.engine.config import TrainConfig, solved
from budget.engine.cost import CostModel, members_per_chunk, short_call_seconds
from budget.engine.cost import cost_model as measured_cost
from budget.engine.cost import units as run_units
from budget.engine.device import products_phrase, training_device
from budget.engine.packed import DeviceFeatures
from budget.engine.runs import train_logreg, train_runs
from budget.errors import BudgetError
from budget.features.featureset import FeatureSet
from budget.grid import PAIR, SINGLE, Run
from budget.heads import ATTN_SCORE_PRIOR, HEADS, EnsembleHead
from budget.results import RunOutput


@dataclass(frozen=True)
class HeadSpec:
    """A head and how it trains.  ``inputs`` names the feature sets a run reads (:data:`SINGLE` or :data:`PAIR`)."""

    name: str
    inputs: ClassVar[tuple[str, ...]] = SINGLE
    budgeted: ClassVar[bool] = True  # has an optimiser budget the convergence check can double
    uploads: ClassVar[bool] = False  # trains from features uploaded to the device once per feature set
    reads_frames: ClassVar[bool] = False  # reads frames, not only the stored per-utterance statistics

    #: whether a training step reads a sample of each utterance's frames (``train_frames``)
    samples_frames: ClassVar[bool] = False
    #: whether the head weighs frames by a learned score (attention), with its own penalty
    scores_frames: ClassVar[bool] = False
    #: whether the head can learn weights over an encoder's layers (a ``:weighted`` feature set)
    mixes_layers: ClassVar[bool] = False

    def schedule(self, config: TrainConfig) -> str:
        """What trained the runs, for the results table."""
        return config.schedule

    def steps(self, config: TrainConfig, n_train: int) -> int:
        """The optimiser budget of a run on ``n_train`` examples, for the results table."""
        return config.total_steps(n_train)

    def units(self, run: Run, config: TrainConfig) -> int:
        """A run's units of work for the cost model and the progress bar."""
        return config.total_steps(len(run.train))

    def goes_on(self, config: TrainConfig) -> bool:
        """Whether a run at a higher budget trains on from the run below it (:meth:`TrainConfig.scaled`) rather than
        again from the start."""
        return False

    def chunk(self, features: FeatureSet | None, config: TrainConfig, n_classes: int, train_rows: int | None = None) -> int:
        """How many runs train (and are saved) together; ``train_rows``: the most training rows of one of them."""
        return 10

    def cost_model(self, inputs: dict[str, FeatureSet], labels: np.ndarray, runs: list[Run], n_classes: int,
                   config: TrainConfig, uploaded: DeviceFeatures | None) -> CostModel:  # fmt: skip
        """Measured seconds per unit by training examples (free where the head reports its own progress)."""
        return CostModel()

    def train(self, inputs: dict[str, FeatureSet], labels: np.ndarray, runs: list[Run], n_classes: int,
              config: TrainConfig, advance=None, uploaded: DeviceFeatures | None = None, probabilities: bool = False
              ) -> list[np.ndarray | RunOutput]:  # fmt: skip
        """Train every run; return each run's predictions on its test positions (or :class:`RunOutput`, which with
        ``probabilities`` holds its class probabilities there)."""
        raise NotImplementedError

    def training(self, config: TrainConfig) -> str:
        """How the head's runs train under ``config``, in words (:func:`describe_training`)."""
        return _stepped(config, frames=False, products=False)


@dataclass(frozen=True)
class EnsembleSpec(HeadSpec):
    """A head of :data:`budget.heads.HEADS`: every run of a chunk in one ensemble."""

    uploads: ClassVar[bool] = True

    @property
    def module(self) -> type[EnsembleHead]:
        """The head's torch module class, which the engine trains."""
        return HEADS[self.name]

    @property
    def reads_frames(self) -> bool:
        return not self.module.pools_first

    @property
    def samples_frames(self) -> bool:
        return self.module.frame_mean

    @property
    def scores_frames(self) -> bool:
        return self.module.full_batch and not self.module.pools_first

    @property
    def mixes_layers(self) -> bool:
        return self.module.mixes_layers

    def schedule(self, config: TrainConfig) -> str:
        return "lbfgs" if solved(self.module, config) else config.schedule

    def steps(self, config: TrainConfig, n_train: int) -> int:
        if not solved(self.module, config):
            return config.total_steps(n_train)
        return config.lbfgs_iterations(self.scores_frames)  # L-BFGS: its cap

    def units(self, run: Run, config: TrainConfig) -> int:
        return run_units(self.module, run, config)

    def goes_on(self, config: TrainConfig) -> bool:
        return not solved(self.module, config)

    def chunk(self, features: FeatureSet | None, config: TrainConfig, n_classes: int, train_rows: int | None = None) -> int:
        return members_per_chunk(self.module, features, config, training_device(config), n_classes, train_rows)

    def cost_model(self, inputs, labels, runs, n_classes, config, uploaded) -> CostModel:
        return measured_cost(self.module, inputs["single"], labels, runs, n_classes, config, uploaded)

    def train(self, inputs, labels, runs, n_classes, config, advance=None, uploaded=None, probabilities=False
              ) -> list[np.ndarray | RunOutput]:  # fmt: skip
        return train_runs(self.module, inputs["single"], labels, runs, n_classes, config, advance, uploaded, probabilities)

    def training(self, config: TrainConfig) -> str:
        if not solved(self.module, config):
            return _stepped(config, frames=self.samples_frames, products=True)
        prior = f"; attention's frame score {ATTN_SCORE_PRIOR:g} x width times as strongly" if self.scores_frames else ""
        start = "a zero start"
        if self.scores_frames:
            start += ", attention from its mean-pooling optimum" if config.attention_start == "pooled" else ""
            start += (f", weighing at most {config.attention_segments} stretches of each utterance (their frames' means)"
                      if config.attention_segments else "")  # fmt: skip
        cap = config.lbfgs_iterations(self.scores_frames)
        return (f"L2-penalised (C = {config.l2_c:g}{prior}) on standardised inputs, every run fitted by full-batch L-BFGS "
                f"from {start}, to scikit-learn's tolerance or at most {cap} iterations (no dropout)")  # fmt: skip


@dataclass(frozen=True)
class ReferenceSpec(HeadSpec):
    """``logreg``: scikit-learn's logistic regression on standardised mean-pooled features, one run at a time."""

    budgeted: ClassVar[bool] = False

    def schedule(self, config: TrainConfig) -> str:
        return self.name

    def steps(self, config: TrainConfig, n_train: int) -> int:
        return 0  # solved by scikit-learn to its tolerance

    def units(self, run: Run, config: TrainConfig) -> int:
        return 1

    def cost_model(self, inputs, labels, runs, n_classes, config, uploaded) -> CostModel:
        def measure(sample: list[Run]) -> float:
            return short_call_seconds(lambda: train_logreg(inputs["single"], labels, sample[0], config.l2_c))

        return CostModel.probed(measure, runs)

    def training(self, config: TrainConfig) -> str:
        return f"scikit-learn's logistic regression (L2, C = {config.l2_c:g}) on standardised mean-pooled features"

    def train(self, inputs, labels, runs, n_classes, config, advance=None, uploaded=None, probabilities=False
              ) -> list[np.ndarray | RunOutput]:  # fmt: skip
        predictions = []
        for run in runs:
            predictions.append(train_logreg(inputs["single"], labels, run, config.l2_c, n_classes if probabilities else None))
            if advance:
                advance(1)
        return predictions


@dataclass(frozen=True)
class BimodalSpec(HeadSpec):
    """The alignment model or an ablation, on audio + text pairs; it draws its own progress bar."""

    inputs: ClassVar[tuple[str, ...]] = PAIR
    reads_frames: ClassVar[bool] = True

    def train(self, inputs, labels, runs, n_classes, config, advance=None, uploaded=None, probabilities=False
              ) -> list[np.ndarray]:  # fmt: skip
        if probabilities:
            raise BudgetError(f"{self.name} gives no class probabilities: choose clips with a single-feature head")
        return bimodal.train_bimodal_runs(self.name, bimodal.MODALITIES[self.name], inputs.get("audio"), inputs.get("text"),
                                          labels, runs, n_classes, config)  # fmt: skip


LOGREG = "logreg"
REGISTRY: dict[str, HeadSpec] = {
    **{name: EnsembleSpec(name) for name in HEADS},
    LOGREG: ReferenceSpec(LOGREG),
    **{name: BimodalSpec(name) for name in bimodal.MODALITIES},
}
#: Heads for one feature set: Table 1 of the paper, plus the reference.
ACOUSTIC_HEADS = tuple(name for name, spec in REGISTRY.items() if spec.inputs == SINGLE)


def head_spec(name: str) -> HeadSpec:
    """The head's specification, or a clear error listing the choices."""
    if name not in REGISTRY:
        raise BudgetError(f"unknown model {name!r}; choose from {', '.join(REGISTRY)}")
    return REGISTRY[name]


def describe_training(config: TrainConfig, heads) -> str:
    """How ``heads`` train under ``config``, in words; heads that train alike are named together.  The study's log
    and its report both say it this way."""
    groups: dict[str, list[str]] = {}
    for head in heads:
        groups.setdefault(head_spec(head).training(config), []).append(head)
    return "; ".join(f"{', '.join(names)}: {text}" for text, names in groups.items())


def _stepped(config: TrainConfig, frames: bool, products: bool) -> str:
    """The optimiser a stepped head trains with; ``frames``: it reads a sample of frames a step; ``products``: its
    frame products run in the config's decided precision."""
    if config.schedule == "steps" and config.max_epochs:
        budget = (f"{config.max_epochs} passes over its subset, from {config.steps // 4} to {config.steps} optimiser "
                  f"steps (each run's are in the results' steps column), learning rate {config.lr:g} decayed to 0 on a "
                  "cosine")  # fmt: skip
    elif config.schedule == "steps":
        budget = f"{config.steps} optimiser steps for every run, learning rate {config.lr:g} decayed to 0 on a cosine"
    else:
        budget = f"{config.epochs} epochs (steps grow with the subset), constant learning rate {config.lr:g}"
    reading = f", reading {config.train_frames} evenly spaced frames of each utterance a step" if frames and config.train_frames else ""
    decay = f", weight decay {config.weight_decay:g}" if config.weight_decay else ""
    multiplied = f", products in {products_phrase(config)}" if products and config.bf16 is not None else ""
    return f"Adam, {budget}, batches of {config.batch_size}{reading}, dropout {config.dropout:g}{decay}{multiplied}"


def train(head: str, inputs: dict[str, FeatureSet], labels: np.ndarray, runs: list[Run], n_classes: int,
          config: TrainConfig, advance=None, uploaded: DeviceFeatures | None = None, probabilities: bool = False
          ) -> list[np.ndarray | RunOutput]:  # fmt: skip
    """Train runs of ``head`` (the study's default trainer; tests hand a study their own)."""
    return head_spec(head).train(inputs, labels, runs, n_classes, config, advance, uploaded, probabilities)
