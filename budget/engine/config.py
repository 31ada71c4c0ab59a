"""The training settings every run of a study shares (:class:`TrainConfig`), with their defaults and checks."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace

from budget.errors import BudgetError, check_number
from budget.heads import DEFAULT_DROPOUT, EnsembleHead
from budget.settings import option

SCHEDULES = ("steps", "epochs")


#: Defaults of the ``steps`` schedule (chosen by the convergence check on EmoDB: README, Studies).
DEFAULT_STEPS = 3000


DEFAULT_LR = 1e-3


DEFAULT_TRAIN_FRAMES = 8


DEFAULT_MAX_EPOCHS = 150


#: Fitted attention weighs each utterance as at most this many stretches (their frames' means), and stops after at
#: most this many L-BFGS iterations from its mean-pooling start: its work per run then grows as its subset, not
#: faster (benchmarks/RESULTS.md: EmoDB's UA unchanged within noise, a fit 2 to 4 times cheaper).
DEFAULT_ATTENTION_SEGMENTS = 32


DEFAULT_ATTENTION_ITERATIONS = 50


#: How a run folder written before a setting existed trained, where today's default trains otherwise.
BEFORE_ADDED = {"attention_segments": 0, "attention_iterations": 0}


ATTENTION_STARTS = ("pooled", "zero")


#: The paper's protocol, for the ``epochs`` schedule.
PAPER_EPOCHS = 60


PAPER_LR = 1e-4


#: The full-batch heads' L-BFGS stops when no gradient element (of a member's mean loss) exceeds this:
#: scikit-learn's lbfgs rule for the same objective (its ``tol``), so ``mean_pool`` stops where ``logreg`` does.
DEFAULT_LBFGS_TOLERANCE = 1e-4


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings shared by every run of a study.

    ``schedule="steps"``: ``steps`` optimiser steps for every run, learning
    rate ``lr`` decayed to zero on a cosine; with ``max_epochs``, a run on a
    small subset stops sooner, after that many passes over it, but never
    before a quarter of ``steps``.  ``schedule="epochs"``: the paper's
    ``epochs`` passes over each run's subset at the constant ``lr``.
    """

    schedule: str = field(default="steps", metadata=option(
        "--schedule", "steps: the same optimiser steps for every size (default); epochs: the paper's fixed epochs at a "
        "constant rate (steps grow with the subset)."))
    steps: int = field(default=DEFAULT_STEPS, metadata=option(
        "--steps", "The most optimiser steps of an mlp_pool run (default 3000; a smaller subset stops after 150 passes "
        "over it, never before a quarter of this); the L-BFGS iteration cap of the full-batch heads."))
    epochs: int = field(default=PAPER_EPOCHS, metadata=option("--epochs", "Epochs under --schedule epochs (default 60)."))
    max_epochs: int = DEFAULT_MAX_EPOCHS  # under "steps": a run's passes over its subset, at most; 0: always `steps`
    lr: float = field(default=DEFAULT_LR, metadata=option(
        "--lr", "Adam learning rate (default 1e-3; the paper's is 1e-4)."))
    batch_size: int = field(default=16, metadata=option("--batch-size", "Training batch size (default 16)."))
    train_frames: int = field(default=DEFAULT_TRAIN_FRAMES, metadata=option(
        "--train-frames", "Evenly spaced frames of each utterance an mlp_pool step reads (default 8; 0: every frame). "
        "Prediction always reads every frame."))
    attention_segments: int = DEFAULT_ATTENTION_SEGMENTS  # fitted attention weighs at most this many stretches of each utterance; 0: every frame
    attention_iterations: int = DEFAULT_ATTENTION_ITERATIONS  # fitted attention's L-BFGS iterations from its start, at most; 0: `steps`
    attention_start: str = "pooled"  # fitted attention starts at its mean-pooling optimum ("pooled") or at zero
    lbfgs_tolerance: float = DEFAULT_LBFGS_TOLERANCE  # the full-batch fits stop below this largest gradient element
    dropout: float = field(default=DEFAULT_DROPOUT, metadata=option("--dropout", "Dropout after each layer (default 0.2)."))
    weight_decay: float = 0.0
    l2_c: float = 1.0  # inverse L2 strength (scikit-learn's C) of logreg and, under "steps", of the full-batch heads
    device: str = field(default="auto", metadata=option(  # resolved by the study
        "--device", "auto (CUDA when present), cpu or cuda[:N] (default: the config's, else auto)."))
    memory_mb: int | None = None  # activation budget per ensemble chunk; None: CPU_CHUNK_MB on CPU, from free memory on CUDA
    eval_mb: int | None = None  # a stepped frame head's evaluation batch, at most (a study's memory plan sets it); None: EVAL_VALUES
    bf16: bool | None = None  # bf16 autocast for frame heads' products; None: where the device runs it fast (resolved)
    cycles: int = 1  # the multiple of the budget a run trains at (the convergence check's rungs): see scaled()

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise BudgetError(f"schedule must be one of {', '.join(SCHEDULES)}; got {self.schedule!r}")
        for key in ("steps", "epochs", "batch_size"):
            check_number(key, getattr(self, key), integer=True, minimum=1)
        check_number("train_frames", self.train_frames, integer=True, minimum=0)
        check_number("max_epochs", self.max_epochs, integer=True, minimum=0)
        check_number("cycles", self.cycles, integer=True, minimum=1)
        check_number("attention_segments", self.attention_segments, integer=True, minimum=0)
        check_number("attention_iterations", self.attention_iterations, integer=True, minimum=0)
        if self.attention_start not in ATTENTION_STARTS:
            raise BudgetError(f"attention_start must be one of {', '.join(ATTENTION_STARTS)}; got {self.attention_start!r}")
        for key in ("lr", "dropout", "weight_decay", "l2_c", "lbfgs_tolerance"):
            check_number(key, getattr(self, key), minimum=0)
        for key in ("memory_mb", "eval_mb"):
            if getattr(self, key) is not None:
                check_number(key, getattr(self, key), integer=True, minimum=0)
        if not isinstance(self.device, str) or not isinstance(self.bf16, bool | None):
            raise BudgetError(f"device must be a string and bf16 true or false; got {self.device!r}, {self.bf16!r}")
        if not self.lr > 0 or not self.dropout < 1 or not self.l2_c > 0:
            raise BudgetError(f"lr and l2_c must be positive and dropout below 1; got {self.lr}, {self.l2_c}, {self.dropout}")

    def lbfgs_iterations(self, attention: bool) -> int:
        """The L-BFGS iteration cap of a fitted head: fitted attention's own, where set, else ``steps``; times
        ``cycles``."""
        return self.cycles * ((attention and self.attention_iterations) or self.steps)

    def steps_for(self, n_train: int) -> int:
        """Optimiser steps of one cycle of a run with ``n_train`` examples (its schedule's length)."""
        if self.schedule == "steps":
            if not self.max_epochs:
                return self.steps
            passes = math.ceil(self.max_epochs * n_train / self.batch_size)
            return min(self.steps, max(self.steps // 4, passes))
        return max(1, math.ceil(self.epochs * n_train / self.batch_size))

    def total_steps(self, n_train: int) -> int:
        """Optimiser steps of a run with ``n_train`` examples over all its cycles."""
        return self.cycles * self.steps_for(n_train)

    def scaled(self, factor: int) -> TrainConfig:
        """``factor`` times the budget, as the convergence check trains it (2x, then 4x and 8x for cells still
        learning): a stepped run trains ``factor`` cycles of its schedule, each from the weights the last one ended
        at, with a fresh optimiser and the learning rate back at its start (a warm restart: Loshchilov and Hutter,
        "SGDR", ICLR 2017), reading its data stream on where the last stopped; so a run at 2x is its run at 1x
        trained one cycle further.  A fitted head's L-BFGS iteration cap is multiplied."""
        return replace(self, cycles=factor * self.cycles)

    def doubled(self) -> TrainConfig:
        """Twice the budget: the convergence check's first setting."""
        return self.scaled(2)

    @classmethod
    def recorded(cls, values: dict) -> TrainConfig:
        """The settings a run folder recorded (``config.json``'s ``train``); keys this version no longer has are left
        out, keys it has since added take what the folder's runs trained with (:data:`BEFORE_ADDED`), else their
        defaults."""
        known = {spec.name for spec in fields(cls)}
        return cls(**{**BEFORE_ADDED, **{key: value for key, value in values.items() if key in known}})


def solved(head: type[EnsembleHead], config: TrainConfig) -> bool:
    """Whether an ensemble head's runs are fitted to an optimum by full-batch L-BFGS rather than stepped."""
    return config.schedule == "steps" and head.full_batch
