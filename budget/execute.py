"""Executing a study's jobs: chunks trained, timed against the cost model, each written as one part.

An executor receives the jobs of one table, trains what the run folder's
parts lack, and writes every trained chunk to the run folder from this
process, so resuming, provenance and tables do not depend on where runs
train.  :class:`LocalExecutor` trains in this process; :class:`RayExecutor`
sends each chunk to a Ray cluster as a task (a local one, or one joined by
address), each feature set put into Ray's object store once.  A run never
depends on which runs share its chunk, and the chunks are the same either
way, so both give the same results.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import numpy as np

from budget.engine.config import TrainConfig
from budget.engine.cost import CostModel
from budget.engine.packed import DeviceFeatures
from budget.features.distributed import Cluster, Where, fetched
from budget.grid import Job, Run
from budget.metrics import run_metrics
from budget.progress import duration, progress_bar
from budget.registry import HeadSpec, head_spec
from budget.results import RESULT_KEY, Checkpoint, RunOutput
from budget.runfolder import RunFolder

#: :func:`budget.registry.train`'s protocol: head, inputs by part, labels, runs, classes, config, giving each run's
#: predictions (or :class:`budget.results.RunOutput`); tests hand in their own.
Trainer = Callable[..., list[np.ndarray | RunOutput]]


@dataclass
class Chunk:
    """Runs of one job trained (and written) together, and what the cost model priced them at."""

    job: Job
    runs: list[Run]
    estimate: float  # seconds
    units: int  # the runs' units of work (steps, or fits), for progress within the chunk


@dataclass
class Work:
    """What one table's parts lack, under one training config, in priced chunks."""

    table: str
    train: TrainConfig
    chunks: list[Chunk]

    @property
    def runs(self) -> int:
        return sum(len(chunk.runs) for chunk in self.chunks)

    @property
    def estimate(self) -> float:
        return sum(chunk.estimate for chunk in self.chunks)


class Tracker:
    """A study's training as it goes: the work done (priced seconds: the share the progress display shows), the runs
    done (a chunk's runs advance together, step by step) and the time left.

    The time left is every unfinished chunk's price times the measured-to-priced ratio of its job (feature set and
    head: the probes misprice each its own way) over the job's last :data:`RECENT` finished chunks and the one in
    training, or its head's, or any job's while it has none, so the ETA follows the machine's actual speed (a busy
    machine, a job the probes priced low) instead of the estimate made before training.  ``clock`` is the seconds
    counter chunks are timed by.
    """

    #: Finished chunks of a head whose measured-to-priced ratio predicts its chunks to come.
    RECENT = 3

    def __init__(self, works: list[Work], clock: Callable[[], float] = time.perf_counter):
        self.pending = {id(chunk): chunk for work in works for chunk in work.chunks}
        self.total_runs = sum(work.runs for work in works)
        self.total_work = sum(work.estimate for work in works)
        self.done_runs = 0.0
        self.clock = clock
        self.fraction: dict[int, float] = {}  # of a chunk in training, how much is done
        self.started: dict[int, float] = {}  # of a chunk in training in this process, when it started
        self.ratios: dict[tuple[str, str], list[tuple[float, float]]] = {}  # by job: (measured, priced) of finished chunks

    def start(self, chunk: Chunk) -> None:
        """``chunk`` starts training in this process (its progress then times it as it goes)."""
        self.started[id(chunk)] = self.clock()

    def advance(self, chunk: Chunk, fraction: float) -> float:
        """``fraction`` more of ``chunk`` is done; return the work (priced seconds) that is."""
        self.fraction[id(chunk)] = self.fraction.get(id(chunk), 0.0) + fraction
        self.done_runs += fraction * len(chunk.runs)
        return fraction * chunk.estimate

    def finished(self, chunk: Chunk, seconds: float) -> float:
        """``chunk`` took ``seconds``; return the work (priced seconds) its last steps were."""
        left = 1.0 - self.fraction.pop(id(chunk), 0.0)
        self.pending.pop(id(chunk), None)
        self.started.pop(id(chunk), None)
        self.ratios.setdefault(_job(chunk), []).append((seconds, chunk.estimate))
        self.done_runs += left * len(chunk.runs)
        return left * chunk.estimate

    def ratio(self, job: tuple[str, str]) -> float:
        """Measured over priced seconds of the recent chunks of ``job`` (feature set, head), else of its head, else
        of any job; 1 before any chunk has run."""
        now = self.clock()
        training = [(_job(self.pending[key]), (now - started, self.fraction.get(key, 0.0) * self.pending[key].estimate))
                    for key, started in self.started.items()]  # fmt: skip
        for alike in (lambda other: other == job, lambda other: other[1] == job[1], lambda other: True):
            recent = [timing for other, timings in self.ratios.items() if alike(other) for timing in timings[-self.RECENT :]]
            recent += [timing for other, timing in training if alike(other)]
            priced = sum(p for _, p in recent)
            if priced > 0:
                return sum(m for m, _ in recent) / priced
        return 1.0

    def remaining(self) -> float:
        """Seconds of training left: every unfinished chunk's price at its job's ratio, less what is done of it."""
        return sum(chunk.estimate * self.ratio(_job(chunk)) * (1.0 - self.fraction.get(key, 0.0))
                   for key, chunk in self.pending.items())  # fmt: skip

    def done_text(self) -> str:
        return f"{int(self.done_runs + 1e-9)}/{self.total_runs} runs"


def _job(chunk: Chunk) -> tuple[str, str]:
    """The (feature set, head) a chunk's time is predicted by."""
    return chunk.job.name, chunk.job.head


class Executor:
    """What every executor shares: which runs a table's parts lack, their chunks and prices, the progress, the rows.

    :meth:`plan` prices what to train (a :class:`Work` per table), :meth:`execute` trains planned work under one
    progress display whose ETA learns (:class:`Tracker`); :meth:`run` does both for one table.  A subclass trains
    the chunks (:meth:`train_chunks`) and hands each trained one to :meth:`finish`.
    """

    def __init__(self, folder: RunFolder, trainer: Trainer, classes: list[str], fold_names: dict[int, str], log):
        self.folder, self.trainer, self.classes, self.fold_names, self.log = folder, trainer, classes, fold_names, log
        self.uploaded: dict[str, DeviceFeatures] = {}  # each feature set on the training device, once
        # each job's cost model, probed once: a later pass (the convergence check's doubled budgets) costs as much a
        # unit of work, and fresh short probes on a busy machine scatter where the first ones were made alike
        self.cost_models: dict[tuple[str, str], CostModel] = {}
        self.checkpoints: dict[tuple, Checkpoint] = {}  # by run key: the weights a kept run ended at, its latest rung

    def plan(self, jobs: list[Job], table: str, train: TrainConfig, keep: set[tuple] = frozenset(),
             after: list[Work] = ()) -> Work:  # fmt: skip
        """What ``table``'s parts lack of ``jobs``, in chunks priced by each head's cost model.

        A run goes on from its checkpoint where the executor holds one, or where
        work planned before it (``after``) will leave one, below ``train``'s
        cycles; the runs of ``keep`` (by key) leave theirs with the executor in
        turn, for a later rung of the convergence check to go on from.
        """
        finished = self.folder.current(table, {(job.name, job.head): job.digest for job in jobs}, self.log)
        done = set(finished[RESULT_KEY].itertuples(index=False, name=None))
        held = {key: checkpoint.cycles for key, checkpoint in self.checkpoints.items()}
        for work in after:
            held.update({run.key(chunk.job): work.train.cycles for chunk in work.chunks for run in chunk.runs
                         if run.keeps})  # fmt: skip
        todo = []
        for job in (job.without(done) for job in jobs):
            if job.runs:
                todo.append(replace(job, runs=[replace(run, start=_promised(held.get(run.key(job), 0), train),
                                                       keeps=run.key(job) in keep) for run in job.runs]))  # fmt: skip
        return Work(table, train, self._chunks(todo, train))

    def announce(self, works: list[Work], what: str = "") -> float:
        """Log the estimate of ``works`` (per head; ``what`` says what they are) and return it in seconds."""
        by_head: dict[str, float] = {}
        for chunk in (chunk for work in works for chunk in work.chunks):
            by_head[chunk.job.head] = by_head.get(chunk.job.head, 0.0) + chunk.estimate
        total = sum(by_head.values())
        if by_head:
            heads = ", ".join(f"{head} {duration(seconds)}" for head, seconds in by_head.items())
            self.log(f"estimated training time: {duration(total)}{self.estimate_scope} for "
                     f"{sum(work.runs for work in works)} runs{what} ({heads}; each head timed at its smallest and "
                     "largest size)")  # fmt: skip
        return total

    def execute(self, works: list[Work]) -> float:
        """Train planned ``works`` in turn under one progress display; return the seconds it took."""
        works = [work for work in works if work.chunks]
        if not works:
            return 0.0
        tracker, started = Tracker(works, self.clock), self.clock()
        with progress_bar(tracker.total_work, "training", unit="s", done=tracker.done_text, eta=tracker.remaining
                          ) as advance:  # fmt: skip
            for work in works:
                self.train_chunks(work, tracker, advance)
        return self.clock() - started

    def run(self, jobs: list[Job], table: str, train: TrainConfig) -> None:
        """Train what ``table``'s parts lack."""
        work = self.plan(jobs, table, train)
        self.announce([work])
        self.execute([work])

    estimate_scope = ""  # how the estimate's seconds are spent (one process, or a cluster's workers together)
    clock = staticmethod(time.perf_counter)  # what training is timed by

    def train_chunks(self, work: Work, tracker: Tracker, advance) -> None:
        raise NotImplementedError

    def map(self, function: Callable, shared: dict, tasks: list[dict], train: TrainConfig) -> Iterator[tuple[int, object]]:
        """``function(**shared, **task)`` for every task, with as many CPUs and torch threads as in-process training
        (``shared`` sent once), yielding ``(task index, result)`` as each finishes."""
        raise NotImplementedError

    def started(self, chunk: Chunk) -> list[Run]:
        """The chunk's runs with the checkpoints they were planned to go on from (planned, a run holds its cycles
        alone); where one is not held (a trainer that keeps none), every run of the chunk from the start."""
        held = [self.checkpoints.get(run.key(chunk.job)) if run.start else None for run in chunk.runs]
        if any(run.start and (checkpoint is None or checkpoint.cycles != run.start.cycles)
               for run, checkpoint in zip(chunk.runs, held, strict=True)):  # fmt: skip
            return [replace(run, start=None) for run in chunk.runs]
        return [replace(run, start=checkpoint) for run, checkpoint in zip(chunk.runs, held, strict=True)]

    def finish(self, chunk: Chunk, predictions: list[np.ndarray | RunOutput], seconds: float, work: Work,
               tracker: Tracker, advance) -> None:  # fmt: skip
        """Write a trained chunk as one part, hold the checkpoints its runs keep, and count the chunk done."""
        self.folder.write_part(self._rows(chunk.job, chunk.runs, predictions, (seconds, chunk.estimate), work.train),
                               work.table)  # fmt: skip
        for run, output in zip(chunk.runs, predictions, strict=True):
            if run.keeps and isinstance(output, RunOutput) and output.checkpoint is not None:
                self.checkpoints[run.key(chunk.job)] = output.checkpoint
        advance(tracker.finished(chunk, seconds))

    def _chunks(self, todo: list[Job], train: TrainConfig) -> list[Chunk]:
        """Every job's runs in chunks of one step count, as many as train together, each priced by its job's model
        (probed the first time the job is planned, on all its runs: their smallest and largest size)."""
        n_classes = len(self.classes)
        chunks = []
        for job in todo:
            spec = head_spec(job.head)
            key = (job.name, job.head)
            if key not in self.cost_models:
                self.cost_models[key] = spec.cost_model(job.inputs, job.labels, job.runs, n_classes, train,
                                                        self._uploaded(job, train))  # fmt: skip
            model = self.cost_models[key]
            for step_count, start in sorted({(spec.units(run, train), _cycles(run)) for run in job.runs}):
                group = [run for run in job.runs if (spec.units(run, train), _cycles(run)) == (step_count, start)]
                size = spec.chunk(job.single, train, n_classes, max(len(run.train) for run in group))
                for start in range(0, len(group), size):
                    runs = group[start : start + size]
                    units = sum(spec.units(run, train) for run in runs)
                    chunks.append(Chunk(job, runs, _seconds(model, spec, runs, train), units))
        return chunks

    def _rows(self, job: Job, runs: list[Run], predictions, seconds: tuple[float, float], train: TrainConfig) -> list[dict]:
        """A trained chunk's result rows; ``seconds`` is (measured, estimated) for the whole chunk."""
        measured, estimated = seconds
        spec = head_spec(job.head)
        outputs = [RunOutput.of(output) for output in predictions]
        return [
            {
                "features": job.name,
                "head": job.head,
                "size": run.size,
                "n_train": len(run.train),
                "fold": run.fold,
                "fold_name": self.fold_names[run.fold],
                "seed": run.seed,
                **run_metrics(job.labels[run.test], output.predictions, self.classes),
                "schedule": spec.schedule(train),
                "steps": spec.steps(train, len(run.train)),  # L-BFGS: its iteration cap
                "train_seconds": measured / len(runs),
                "estimated_seconds": estimated / len(runs),  # the cost model's price, to check the ETA against
                "inputs": job.digest,
                **output.columns(),
            }
            for run, output in zip(runs, outputs, strict=True)
        ]


    def _uploaded(self, job: Job, train: TrainConfig) -> DeviceFeatures | None:
        """The job's features on the training device, uploaded once per feature set."""
        if not head_spec(job.head).uploads:
            return None
        if job.name not in self.uploaded:
            import torch

            self.uploaded[job.name] = DeviceFeatures.upload(job.single, torch.device(train.device))
        return self.uploaded[job.name]


class LocalExecutor(Executor):
    """Trains the chunks in this process, in turn."""

    def train_chunks(self, work: Work, tracker: Tracker, advance) -> None:
        for chunk in work.chunks:
            step = 1.0 / max(chunk.units, 1)
            tracker.start(chunk)
            started = self.clock()
            predictions = self.trainer(chunk.job.head, chunk.job.inputs, chunk.job.labels, self.started(chunk), len(self.classes),
                                       work.train, advance=lambda n, chunk=chunk, step=step: advance(tracker.advance(chunk, n * step)),
                                       uploaded=self.uploaded.get(chunk.job.name))  # fmt: skip
            self.finish(chunk, predictions, self.clock() - started, work, tracker, advance)

    def map(self, function, shared, tasks, train):
        for i, task in enumerate(tasks):
            yield i, function(**shared, **task)


def make_executor(where: Where, folder: RunFolder, trainer: Trainer, classes: list[str], fold_names: dict[int, str],
                  log) -> Executor:  # fmt: skip
    """The executor that trains where ``where`` says: in this process, or on a Ray cluster."""
    if where.local:
        return LocalExecutor(folder, trainer, classes, fold_names, log)
    return RayExecutor(folder, trainer, classes, fold_names, log, where)


class RayExecutor(Executor):
    """Trains the chunks as Ray tasks, each with as many CPUs (and torch threads) as this process trains with,
    so a task multiplies as in-process training does (the fitted heads' optima depend on the threads' order of
    summation), and a quarter of a GPU on CUDA, so small heads share a card.

    Each job's feature sets go into the object store once; a task returns its
    predictions and this process writes them.  A worker that dies has its
    task run again (Ray's retries); a user error in a task (bad input, out of
    memory) is raised here as the same one-line error as in-process.
    """

    estimate_scope = " of work across the cluster's workers"

    def __init__(self, folder, trainer, classes, fold_names, log, where: Where):
        super().__init__(folder, trainer, classes, fold_names, log)
        self.where = where

    def train_chunks(self, work: Work, tracker: Tracker, advance) -> None:
        with Cluster(self.where) as ray:
            import torch

            threads, gpu = torch.get_num_threads(), (0.25 if work.train.device.startswith("cuda") else 0)
            task = ray.remote(num_cpus=threads, num_gpus=gpu, max_retries=3)(_train_chunk)
            inputs = {}
            for chunk in work.chunks:
                if chunk.job.name not in inputs:
                    inputs[chunk.job.name] = ray.put(chunk.job.inputs)
            pending = {
                task.remote(self.trainer, chunk.job.head, inputs[chunk.job.name], chunk.job.labels, self.started(chunk),
                            len(self.classes), work.train, threads): chunk
                for chunk in work.chunks
            }  # fmt: skip
            for chunk, (predictions, seconds) in _as_completed(ray, pending):
                self.finish(chunk, predictions, seconds, work, tracker, advance)

    def map(self, function, shared, tasks, train):
        with Cluster(self.where) as ray:
            import torch

            threads, gpu = torch.get_num_threads(), (0.25 if train.device.startswith("cuda") else 0)
            task = ray.remote(num_cpus=threads, num_gpus=gpu, max_retries=3)(_call)
            names, values = list(shared), [ray.put(value) for value in shared.values()]
            pending = {task.remote(function, threads, names, *values, **arguments): i for i, arguments in enumerate(tasks)}
            yield from _as_completed(ray, pending)


def _as_completed(ray, pending: dict) -> Iterator[tuple[object, object]]:
    """``(pending[task], result)`` for each Ray task of ``pending`` as it finishes (a user error raised as itself)."""
    while pending:
        (ready,), _ = ray.wait(list(pending), num_returns=1)
        yield pending.pop(ready), fetched(ray, lambda ready=ready: ray.get(ready))


def _call(function: Callable, threads: int, names: list[str], *values, **arguments):
    """A Ray task: ``function`` with the shared values (resolved by Ray) under their names, and the driver's torch
    threads."""
    import torch

    torch.set_num_threads(threads)
    return function(**dict(zip(names, values, strict=True)), **arguments)


def _train_chunk(trainer: Trainer, head: str, inputs, labels, runs, n_classes: int, train: TrainConfig, threads: int):
    """A Ray task: one chunk's predictions and the seconds they took, with the driver's torch threads."""
    import torch

    torch.set_num_threads(threads)
    started = time.perf_counter()
    predictions = trainer(head, inputs, labels, runs, n_classes, train)
    return predictions, time.perf_counter() - started


def _promised(cycles: int, train: TrainConfig) -> Checkpoint | None:
    """Where a run planned at ``train`` starts: the checkpoint of ``cycles`` it will go on from (its weights filled
    in when it trains, :meth:`Executor.started`), or None from the start."""
    return Checkpoint(cycles, {}) if 0 < cycles < train.cycles else None


def _cycles(run: Run) -> int:
    return run.start.cycles if run.start else 0


def _seconds(model: CostModel, spec: HeadSpec, runs: list[Run], train: TrainConfig) -> float:
    """What ``runs`` of one head cost by its model: every run's units at its own size's price."""
    return sum(model.unit_seconds(len(run.train)) * spec.units(run, train) for run in runs)
