"""The grid of a study: its runs and jobs, built from the data and the settings alone (no I/O).

A *run* is one (fold, seed, size): a class-balanced training subset drawn from
every fold but one, and that held-out fold to test on.  A *job* is every run
of one head on one feature set (or audio + text pair).  As scikit-learn's
``learning_curve`` builds its list of (train, test) splits before fitting
any, a study builds its jobs first and hands them to
:mod:`budget.execute`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from budget.features import display_name
from budget.features.featureset import FeatureSet
from budget.results import Checkpoint
from budget.sampling import Size, balanced_subset, curve_ends

#: What a head's runs read: one feature set, or an audio and a text set aligned row for row.
SINGLE, PAIR = ("single",), ("audio", "text")


@dataclass(frozen=True)
class FeaturePair:
    """An audio and a text feature set a bimodal head reads together, aligned row for row."""

    audio: str
    text: str

    @property
    def name(self) -> str:
        """The pair's name in results, built here only: the two feature sets joined by ``+``."""
        return f"{self.audio}+{self.text}"

    @property
    def display(self) -> str:
        return f"{display_name(self.audio)} + {display_name(self.text)}"


@dataclass(frozen=True)
class Run:
    """One training run: positions into the feature set's rows.  A stepped run with a ``start`` trains on from it, and
    one that ``keeps`` returns the weights it ends at (:class:`Checkpoint`)."""

    fold: int
    seed: int
    size: Size
    train: np.ndarray
    test: np.ndarray
    start: Checkpoint | None = field(default=None, compare=False, repr=False)
    keeps: bool = field(default=False, compare=False, repr=False)

    def __post_init__(self):
        object.__setattr__(self, "size", Size.of(self.size))

    def seed_sequence(self) -> np.random.SeedSequence:
        """The run's own randomness: ``full`` seeds as 0, k per class as k + 1."""
        return np.random.SeedSequence([self.seed, self.fold, 0 if self.size.full else self.size.per_class + 1])

    def key(self, job: Job) -> tuple:
        """The run's :data:`budget.results.RESULT_KEY` in ``job``."""
        return job.name, job.head, self.size, self.fold, self.seed


def build_runs(folds: np.ndarray, labels: np.ndarray, sizes: list[Size], seeds: int) -> list[Run]:
    """Every (size, fold, seed) run: balanced subsets nested within a (fold, seed), the whole fold for ``full``."""
    runs = []
    for size in sizes:
        for fold in sorted(set(folds)):
            train_positions = np.flatnonzero(folds != fold)
            test_positions = np.flatnonzero(folds == fold)
            for seed in range(seeds):
                subset = balanced_subset(labels[train_positions], size, seed, int(fold))
                runs.append(Run(int(fold), seed, size, train_positions[subset], test_positions))
    return runs


def build_jobs(
    heads: dict[str, tuple[str, ...]], features: dict[str, FeatureSet], pairs: list[FeaturePair],
    manifest: pd.DataFrame, folds: pd.Series, labels: np.ndarray, sizes: list[Size], seeds: int,
) -> list[Job]:  # fmt: skip
    """One job per (features, head), for heads by what they read (:data:`SINGLE` or :data:`PAIR`): every size,
    fold and seed of it, on the utterances every feature set it reads holds."""
    jobs = []
    for head, reads in heads.items():
        if reads == PAIR:
            inputs_by_name = {pair.name: {"audio": features[pair.audio], "text": features[pair.text]} for pair in pairs}
        else:
            inputs_by_name = {spec: {"single": feature_set} for spec, feature_set in features.items()}
        for name, inputs in inputs_by_name.items():
            keep = manifest["utt_id"].isin(set.intersection(*(set(f.utt_ids) for f in inputs.values()))).to_numpy()
            inputs = {part: f.select(manifest["utt_id"].to_numpy()[keep]) for part, f in inputs.items()}
            digest = inputs_digest(manifest[keep], folds[keep], inputs)
            runs = build_runs(folds.to_numpy()[keep], manifest["label"].to_numpy()[keep], sizes, seeds)
            jobs.append(Job(name, head, inputs, labels[keep], runs, digest))
    return jobs


@dataclass
class Job:
    """Every run of one head on one feature set (or audio + text pair)."""

    name: str
    head: str
    inputs: dict[str, FeatureSet]
    labels: np.ndarray
    runs: list[Run]
    digest: str = ""  # identity of the job's inputs (inputs_digest): results trained on other inputs are stale

    @property
    def single(self) -> FeatureSet | None:
        return self.inputs.get("single")

    def without(self, done: set[tuple]) -> Job:
        """The job without the runs whose :meth:`Run.key` is in ``done``."""
        return replace(self, runs=[run for run in self.runs if run.key(self) not in done])

    def doubled(self, which: str) -> Job:
        """The runs the convergence check repeats: all, or those of :func:`budget.sampling.curve_ends` (``ends``)."""
        if which == "all":
            return self
        ends = curve_ends({r.size for r in self.runs})
        return replace(self, runs=[r for r in self.runs if r.size in ends])


def inputs_digest(manifest: pd.DataFrame, folds: pd.Series, inputs: dict[str, FeatureSet]) -> str:
    """What a job's results depend on besides the settings: its utterances, labels, groups, folds and features.

    Features enter by content (lengths and pooled statistics), so changed audio,
    model weights or extraction settings change the digest even where the store's
    entry name or a file's size and date do not.
    """
    digest = hashlib.sha256(manifest[["utt_id", "label", "group"]].assign(fold=folds.to_numpy()).to_csv(index=False).encode())
    for part, features in sorted(inputs.items()):
        digest.update(part.encode())
        digest.update(np.ascontiguousarray(features.lengths, dtype=np.int64).tobytes())
        digest.update(np.ascontiguousarray(features.mean, dtype=np.float32).tobytes())
    return digest.hexdigest()[:16]
