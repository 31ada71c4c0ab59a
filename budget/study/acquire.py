"""Acquisition studies: which clips to label, simulated on a corpus whose labels are known.

On the speaker folds and seeds of a budget curve, each fold's training
speakers are the unlabelled pool; every strategy acquires clips in rounds up
to the requested sizes (in clips annotated) and the head is retrained after
each round and scored on the held-out fold (:mod:`budget.acquisition`).  Work
runs through the executor (in this process or on Ray), one task per (job,
fold) holding every seed and strategy of the fold, and each finished task is
one part of the run folder, so an interrupted study resumes.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from budget.acquisition import Stream, acquire, distinct_rounds
from budget.engine.config import TrainConfig
from budget.errors import BudgetError
from budget.execute import make_executor
from budget.grid import SINGLE, Job, Run, build_jobs
from budget.progress import duration, progress_bar
from budget.provenance import study_provenance
from budget.registry import describe_training, head_spec
from budget.results import ACQUISITION_KEY
from budget.runfolder import RESULTS
from budget.sampling import FULL, Size, read_sizes
from budget.settings import option
from budget.strategies import STRATEGIES, strategy
from budget.study.config import StudyConfig
from budget.study.run import Study, StudyData, StudyInputs


@dataclass(frozen=True)
class AcquisitionConfig(StudyConfig):
    """A study's settings, and the acquisition's own: the sizes in clips and the strategies compared."""

    clips: tuple[Size, ...] | None = field(default=None, metadata=option(
        "--clips", "Sizes in clips annotated, the first the seed set's (at least one clip a class), e.g. "
        "20,40,80,160,full (default: two clips a class, doubling up to what every fold's pool holds, and full)."))
    strategies: tuple[str, ...] = field(default=tuple(STRATEGIES), metadata=option(
        "--strategies", f"Acquisition strategies: {', '.join(STRATEGIES)} (default: all; balanced is an oracle "
        "that reads the labels, shown as a bound)."))

    def __post_init__(self):
        super().__post_init__()
        if self.clips is not None:
            object.__setattr__(self, "clips", read_sizes(self.clips))
        names = self.strategies.split(",") if isinstance(self.strategies, str) else self.strategies
        object.__setattr__(self, "strategies", tuple(dict.fromkeys(name.strip() for name in names if name.strip())))
        for name in self.strategies:
            strategy(name)
        if not self.strategies:
            raise BudgetError("an acquisition study needs at least one strategy")
        for head in self.heads or ():
            if head_spec(head).inputs != SINGLE:
                raise BudgetError(f"{head} reads an audio and a text feature set; acquisition ranks clips with a "
                                  "single-feature head")  # fmt: skip

    def to_dict(self) -> dict:
        values = super().to_dict()
        values["clips"] = None if self.clips is None else [size.to_json() for size in self.clips]
        return values


def clip_sizes(requested: tuple[Size, ...] | None, data: StudyData, log) -> list[Size]:
    """The sizes every fold's pool can supply (a larger one is skipped, with a line saying why); by default two clips
    a class, doubling while every pool holds them, then ``full``."""
    pools = len(data.manifest) - data.folds.value_counts()
    smallest, n_classes = int(pools.min()), len(data.classes)
    if requested is None:
        start = 2 * n_classes
        sizes = [Size(start * 2**i) for i in range(int(np.log2(smallest / start)) + 1)] if smallest >= start else []
        return [*sizes, FULL]
    sizes = sorted(requested)
    kept = [size for size in sizes if size.full or size.per_class <= smallest]
    for size in sizes:
        if size not in kept:
            log(f"skipped {size} clips: the pool of fold {data.fold_names[int(pools.idxmin())]} holds {smallest}")
    if not kept or kept[0].full:
        raise BudgetError("an acquisition study starts from a seed set smaller than every fold's pool: give sizes in "
                          f"clips below {smallest}")  # fmt: skip
    if kept[0].per_class < n_classes:
        raise BudgetError(f"the seed set ({kept[0]} clips) must hold one clip of each of the {n_classes} classes")
    return kept


class Acquisition(Study):
    """An acquisition study in its run folder: every strategy's rounds, every head and feature set, every fold and
    seed; the results table has a row per (features, head, strategy, clips, fold, seed)."""

    def announce_sizes(self, data: StudyData, log) -> None:
        """Sizes are in clips here: :func:`clip_sizes` says which it runs, when it runs them."""

    @property
    def training_workers(self) -> int:
        """One: an acquisition study trains in this process."""
        return 1

    def run_inputs(self, inputs: StudyInputs, log=print, check_convergence: str = "none") -> pd.DataFrame:
        config, data = self.config, inputs.data
        sizes = clip_sizes(config.clips, data, log)
        train = replace(config.train, eval_mb=self.memory_plan(inputs, log).eval_mb)
        executor = make_executor(config.executor, self.folder, self.trainer, data.classes, data.fold_names, log)
        with self.folder.writing():
            self.folder.claim(config.digest(), config.to_dict())
            log(f"study folder: {self.run_dir} (running it again resumes)")
            labels = data.manifest["label"].map({c: i for i, c in enumerate(data.classes)}).to_numpy()
            jobs = build_jobs({head: SINGLE for head in config.heads}, inputs.features, [], data.manifest, data.folds,
                              labels, [], config.seeds)  # fmt: skip
            if stacked := [job for job in jobs if job.single.stacked > 1]:
                raise BudgetError(f"{stacked[0].name} stacks every layer; acquisition ranks clips with one layer")
            log(f"training: {describe_training(config.train, config.heads)}; every round of every strategy retrains "
                "the head on the clips labelled so far")  # fmt: skip
            finished = self.folder.current(RESULTS, {(job.name, job.head): job.digest for job in jobs}, log)
            done = set(finished[ACQUISITION_KEY].itertuples(index=False, name=None)) if len(finished) else set()
            fold_of = dict(zip(data.manifest["utt_id"], data.folds, strict=True))
            work = []
            for job in jobs:
                folds = np.array([fold_of[u] for u in job.single.utt_ids])
                for fold in sorted(set(folds)):
                    streams = [Stream(int(fold), seed, name) for seed in range(config.seeds) for name in config.strategies]
                    if any((job.name, job.head, s.strategy, size, s.fold, s.seed) not in done for s in streams for size in sizes):
                        work.append((job, folds, streams))
            if work:
                self._acquire(work, sizes, executor, data, train, log)
            self.folder.write_provenance({
                **study_provenance(config, data.manifest, data.classes, data.fold_names, sizes, [], len(data.problems),
                                   inputs.entries, [], inputs.layer_sweeps),
                "strategies": list(config.strategies),
                "pool_class_counts": _pool_counts(data),
            })  # fmt: skip
            return self._table(RESULTS, {"features": list(inputs.features), "head": list(config.heads),
                                         "strategy": list(config.strategies)})  # fmt: skip

    def _acquire(self, work: list[tuple[Job, np.ndarray, list[Stream]]], sizes: list[Size], executor, data: StudyData,
                 train: TrainConfig, log) -> None:  # fmt: skip
        """Run every (job, fold) task through the executor, trained as ``train`` says, writing each as a part when it
        finishes."""
        config = self.config
        prices = _prices(work, sizes, len(data.classes), config)
        total = sum(prices)
        by_head: dict[str, float] = {}
        for (job, _, _), price in zip(work, prices, strict=True):
            by_head[job.head] = by_head.get(job.head, 0.0) + price
        rounds = sum(len(streams) for _, _, streams in work) * len(sizes)
        fits = sum(sum(_fits(streams, sizes)) for _, _, streams in work)
        log(f"estimated training time: {duration(total)}{executor.estimate_scope} for {rounds} rounds in {fits} fits "
            f"({', '.join(f'{head} {duration(seconds)}' for head, seconds in by_head.items())}; the seed set's round "
            "and the whole pool's are shared by a fold and seed's strategies; each head timed at its smallest and "
            "largest size)")  # fmt: skip
        started = executor.clock()
        with progress_bar(max(total, 1e-9), "acquiring", unit="s") as advance:
            for job in {id(job): job for job, _, _ in work}.values():
                tasks = [(folds, streams, price) for (j, folds, streams), price in zip(work, prices, strict=True) if j is job]
                shared = {"trainer": self.trainer, "head": job.head, "inputs": job.inputs, "labels": job.labels,
                          "folds": tasks[0][0], "sizes": sizes, "n_classes": len(data.classes), "config": train,
                          "classes": data.classes}  # fmt: skip
                for i, rows in executor.map(acquire, shared, [{"streams": streams} for _, streams, _ in tasks], train):
                    self.folder.write_part([{"features": job.name, "head": job.head, **row,
                                             "fold_name": data.fold_names[row["fold"]], "inputs": job.digest}
                                            for row in rows])  # fmt: skip
                    advance(tasks[i][2])
        log(f"acquiring took {duration(executor.clock() - started)}; estimated {duration(total)}{executor.estimate_scope}")


def _prices(work, sizes: list[Size], n_classes: int, config: AcquisitionConfig) -> list[float]:
    """Each task's estimated seconds: its distinct runs (:func:`_fits`) priced by the head's cost model, timed on
    rounds like the study's at its smallest and largest size (as many runs, each on random clips of the pool and
    predicting the rest of it); strategies' own choosing not counted."""
    prices, models = [], {}
    for job, folds, streams in work:
        spec = head_spec(job.head)
        pool, test = np.flatnonzero(folds != streams[0].fold), np.flatnonzero(folds == streams[0].fold)
        fits = _fits(streams, sizes)
        if (job.name, job.head) not in models:
            probes = [run for i in (0, -1) for run in _round(pool, test, streams[0].fold, sizes[i], fits[i])]
            models[(job.name, job.head)] = spec.cost_model(job.inputs, job.labels, probes, n_classes, config.train, None)
        model = models[(job.name, job.head)]
        rounds = [Run(streams[0].fold, 0, size, pool[: len(pool) if size.full else size.per_class], test) for size in sizes]
        prices.append(sum(count * model.unit_seconds(len(run.train)) * spec.units(run, config.train)
                          for count, run in zip(fits, rounds, strict=True)))  # fmt: skip
    return prices


def _round(pool: np.ndarray, test: np.ndarray, fold: int, size: Size, count: int) -> list[Run]:
    """``count`` runs of a round at ``size``, each on its own random clips of ``pool``, predicting the rest of the
    pool and the held-out fold ``test``: what a cost probe times."""
    runs = []
    for seed in range(count):
        order = np.random.default_rng(seed).permutation(len(pool))
        labelled = len(pool) if size.full else size.per_class
        runs.append(Run(fold, seed, size, np.sort(pool[order[:labelled]]), np.concatenate([np.sort(pool[order[labelled:]]), test])))
    return runs


def _fits(streams: list[Stream], sizes: list[Size]) -> list[int]:
    """The runs a task of ``streams`` (one fold) trains at each size: :func:`distinct_rounds` for each seed."""
    seeds = len({stream.seed for stream in streams})
    return [seeds * count for count in distinct_rounds(list(dict.fromkeys(stream.strategy for stream in streams)), sizes)]


def _pool_counts(data: StudyData) -> dict[str, dict[str, int]]:
    """Per held-out fold, the clips of each class its pool (the other folds) holds."""
    held = pd.crosstab(data.folds, data.manifest["label"]).reindex(columns=data.classes, fill_value=0)
    totals = data.manifest["label"].value_counts().reindex(data.classes).fillna(0)
    return {data.fold_names[int(fold)]: {c: int(totals[c] - row[c]) for c in data.classes} for fold, row in held.iterrows()}


__all__ = ["Acquisition", "AcquisitionConfig", "clip_sizes"]
