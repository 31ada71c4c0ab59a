"""Executing a study's jobs: chunks trained, timed against the cost model, each written as one part.

An executor receives the jobs of one table, trains what the run folder's
parts lack, and writes every trained chunk to the run folder from this
process, so resuming, provenance and tables do not depend on where runs
train.  :class:`LocalExecutor` trains on this machine: in this process, or
in worker processes side by side (:class:`Workers`); :class:`RayExecutor`
sends each chunk to a Ray cluster as a task (a local one, or one joined by
address), each feature set put into Ray's object store once.  A run never
depends on which runs share its chunk, and the chunks are the same either
way, so both give the same results.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from itertools import groupby

import numpy as np

from budget.engine.config import TrainConfig
from budget.engine.cost import CostModel
from budget.engine.device import keep_freed_memory, training_device
from budget.engine.packed import DeviceFeatures, prepared_inputs
from budget.errors import BudgetError
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
    side_by_side: int = 1  # chunks that train at once, each priced at the threads it trains with

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

    def __init__(self, works: list[Work], clock: Callable[[], float] = time.perf_counter, side_by_side: int = 1):
        self.side_by_side = side_by_side  # chunks that train at once
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
        """Seconds of training left: every unfinished chunk's price at its job's ratio, less what is done of it, the
        chunks in training each on its worker and the others given to the first free one, longest first."""
        left = {key: chunk.estimate * self.ratio(_job(chunk)) * (1.0 - self.fraction.get(key, 0.0))
                for key, chunk in self.pending.items()}  # fmt: skip
        training = [seconds for key, seconds in left.items() if key in self.started]
        return makespan([seconds for key, seconds in left.items() if key not in self.started], self.side_by_side, training)

    def done_text(self) -> str:
        return f"{int(self.done_runs + 1e-9)}/{self.total_runs} runs"


def makespan(seconds: list[float], workers: int, busy: list[float] = ()) -> float:
    """Seconds until ``workers`` side by side have done chunks of ``seconds``, each given to the first one free,
    longest first, after the chunks of ``busy`` (one a worker) are done."""
    loads = sorted([*busy, *[0.0] * max(workers - len(busy), 0)])
    for chunk in sorted(seconds, reverse=True):
        loads[0] += chunk
        loads.sort()
    return max(loads, default=0.0)


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
        self.cost_models: dict[tuple[str, str, int | None], CostModel] = {}  # by job and the threads it probed at
        self.pricing_threads: int | None = None  # the torch threads chunks are priced at (None: this process's)
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
        side_by_side = self.side_by_side(works)
        total = makespan([chunk.estimate for work in works for chunk in work.chunks], side_by_side)
        if by_head:  # side by side, a head's share of the time
            heads = ", ".join(f"{head} {duration(seconds * total / max(sum(by_head.values()), 1e-9))}"
                              for head, seconds in by_head.items())  # fmt: skip
            self.log(f"estimated training time: {duration(total)}{self.estimate_scope} for "
                     f"{sum(work.runs for work in works)} runs{what} ({heads}; each head timed at its smallest and "
                     "largest size)")  # fmt: skip
        return total

    def execute(self, works: list[Work]) -> float:
        """Train planned ``works`` in turn under one progress display; return the seconds it took."""
        works = [work for work in works if work.chunks]
        if not works:
            return 0.0
        tracker, started = Tracker(works, self.clock, self.side_by_side(works)), self.clock()
        with progress_bar(tracker.total_work, "training", unit="s", done=tracker.done_text, eta=tracker.remaining
                          ) as advance:  # fmt: skip
            self.train_works(works, tracker, advance)
        return self.clock() - started

    def run(self, jobs: list[Job], table: str, train: TrainConfig) -> None:
        """Train what ``table``'s parts lack."""
        work = self.plan(jobs, table, train)
        self.announce([work])
        self.execute([work])

    estimate_scope = ""  # how the estimate's seconds are spent (one process, or a cluster's workers together)
    clock = staticmethod(time.perf_counter)  # what training is timed by

    def side_by_side(self, works: list[Work]) -> int:
        """How many of the chunks of ``works`` train at once, which the estimate of their wall time divides by."""
        return max((work.side_by_side for work in works), default=1)

    def train_works(self, works: list[Work], tracker: Tracker, advance) -> None:
        """Train ``works`` in turn, each chunk handed to :meth:`finish` as it is trained."""
        for work in works:
            self.train_chunks(work, tracker, advance)

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
            key = (job.name, job.head, self.pricing_threads)
            if key not in self.cost_models:
                with torch_threads(self.pricing_threads):
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
    """Trains the chunks on this machine: in this process, in turn, or with ``workers`` > 1 in that many worker
    processes side by side (:class:`Workers`), each with an equal share of this process's torch threads.

    A stepped head's chunk spends much of a step in small products and in
    Python between them, which a second thread of the same process cannot
    share, so on a CPU processes of one thread each train more runs an hour
    than one process of every thread.  The workers train work priced at
    :data:`WORKERS_FROM` seconds or more (their start costs seconds), in
    more than one chunk, on features held in memory (frames left in the
    store are read by this process alone); other work trains here, with
    every thread.  Chunks are priced by probes at a worker's threads, run
    alone: the workers' chunks slower by how much more crowded the CPUs
    will be with them side by side, beside whatever else keeps the CPUs busy
    (measured while the probes ran, :func:`crowding`), and this process's as
    if its threads shared the work perfectly (a bound: small products share
    it less).  A run's results do not depend on where it trained.
    """

    def __init__(self, folder, trainer, classes, fold_names, log, workers: int = 1):
        super().__init__(folder, trainer, classes, fold_names, log)
        self.workers = workers
        self.elsewhere = 0.0  # this process's CPUs that other processes kept busy while the chunks were priced

    @property
    def threads(self) -> int:
        """The torch threads each worker trains with."""
        import torch

        return max(1, torch.get_num_threads() // self.workers)

    def plan(self, jobs, table, train, keep=frozenset(), after=()) -> Work:
        """As :meth:`Executor.plan`, with workers on a CPU: priced at a worker's threads, and for the workers where
        there is enough of it, in more than one chunk, on features in memory; else for this process."""
        if self.workers < 2 or training_device(train).type != "cpu":
            return super().plan(jobs, table, train, keep, after)
        self.pricing_threads, probed = self.threads, len(self.cost_models)
        with cpu_elsewhere() as elsewhere:
            work = super().plan(jobs, table, train, keep, after)
        self.pricing_threads = None
        if len(self.cost_models) > probed:
            self.elsewhere = elsewhere()
        pooled = (len(work.chunks) > 1 and work.estimate >= WORKERS_FROM
                  and not any(self._mapped(chunk.job) for chunk in work.chunks))  # fmt: skip
        side_by_side = min(self.workers, len(work.chunks)) if pooled else 1
        import torch

        each = self.threads if pooled else torch.get_num_threads()  # a chunk's threads
        slower = (crowding(side_by_side * each, self.elsewhere) / crowding(self.threads, self.elsewhere)
                  * self.threads / each)  # fmt: skip
        return replace(work, side_by_side=side_by_side,
                       chunks=[replace(chunk, estimate=chunk.estimate * slower) for chunk in work.chunks])

    def train_works(self, works: list[Work], tracker: Tracker, advance) -> None:
        """Each run of consecutive works planned for the workers in one set of them, the others here, in turn."""
        for pooled, group in groupby(works, key=lambda work: work.side_by_side > 1):
            if pooled:
                self._train_side_by_side(list(group), tracker, advance)
            else:
                super().train_works(list(group), tracker, advance)

    def _train_side_by_side(self, works: list[Work], tracker: Tracker, advance) -> None:
        side_by_side = self.side_by_side(works)
        self.log(f"training in {side_by_side} worker processes side by side, {self.threads} torch thread"
                 f"{'s' if self.threads > 1 else ''} each (--workers sets how many)")  # fmt: skip
        for work in works:  # every copy a head makes of its features, made once here and shared with the workers
            for chunk in work.chunks:
                if head_spec(chunk.job.head).uploads and (uploaded := self.uploaded.get(chunk.job.name)) is not None:
                    prepared_inputs(head_spec(chunk.job.head).module, uploaded, work.train)
        with Workers(side_by_side, self.threads, self.trainer) as workers:
            self._train_on(workers, works, tracker, advance)

    def _train_on(self, workers: Workers, works: list[Work], tracker: Tracker, advance) -> None:
        """Hand each worker a chunk whenever it is free: the longest first of those whose runs go on from no chunk
        still training (a convergence check's rung waits for the runs it goes on from)."""
        queue = [(work, chunk) for work in works for chunk in sorted(work.chunks, key=lambda chunk: -chunk.estimate)]
        unfinished = {id(chunk): chunk for _, chunk in queue}
        keys = {id(chunk): {run.key(chunk.job) for run in chunk.runs} for _, chunk in queue}
        after = {id(chunk): [id(other) for _, other in queue[:i] if keys[id(other)] & keys[id(chunk)]]
                 for i, (_, chunk) in enumerate(queue)}  # fmt: skip
        training: dict[int, tuple[Work, Chunk]] = {}
        while queue or training:
            for worker in workers.idle():
                ready = next((entry for entry in queue if not any(key in unfinished for key in after[id(entry[1])])), None)
                if ready is None:
                    break
                queue.remove(ready)
                work, chunk = ready
                training[workers.send(worker, chunk.job, self.started(chunk), len(self.classes), work.train,
                                      self.uploaded.get(chunk.job.name))] = ready  # fmt: skip
            for task, event, *body in workers.events():
                work, chunk = training[task]
                if event == "started":
                    tracker.start(chunk)
                elif event == "advance":
                    advance(tracker.advance(chunk, body[0] / max(chunk.units, 1)))
                else:
                    predictions, seconds = body
                    del training[task], unfinished[id(chunk)]
                    self.finish(chunk, predictions, seconds, work, tracker, advance)

    def _mapped(self, job: Job) -> bool:
        return (uploaded := self.uploaded.get(job.name)) is not None and uploaded.mapped

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
                  log, workers: int = 1) -> Executor:  # fmt: skip
    """The executor that trains where ``where`` says: on this machine (in ``workers`` processes side by side where
    there is work enough), or on a Ray cluster."""
    if where.local:
        return LocalExecutor(folder, trainer, classes, fold_names, log, workers)
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


#: Priced seconds of work from which a local executor trains in worker processes: below, their start (a fresh
#: interpreter importing torch, a few seconds) would cost more than they save.
WORKERS_FROM = 60.0

#: Seconds between a worker's progress messages: the display moves smoothly without a message per step.
PROGRESS_EVERY = 0.25


@contextmanager
def torch_threads(threads: int | None):
    """Run the block with ``threads`` torch threads (None: as they are), then restore them."""
    if threads is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def crowding(threads: float, elsewhere: float) -> float:
    """How much slower a thread runs with ``threads`` of its own and ``elsewhere`` CPUs' worth of other processes
    busy on this process's CPUs than alone: 1 while they fit, else busy threads over CPUs."""
    return max(1.0, (threads + elsewhere) / _cpus())


@contextmanager
def cpu_elsewhere() -> Iterator[Callable[[], float]]:
    """Measure, over the block, how many of this process's CPUs other processes kept busy (a burner, another
    study), from the kernel's per-CPU counters less this process's own time; 0 where the system does not say."""
    measured = [0.0]
    before = _busy_seconds(), time.process_time(), time.perf_counter()
    yield lambda: measured[0]
    after = _busy_seconds(), time.process_time(), time.perf_counter()
    if before[0] is not None and after[0] is not None and after[2] > before[2]:
        measured[0] = max(0.0, (after[0] - before[0]) - (after[1] - before[1])) / (after[2] - before[2])


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _busy_seconds() -> float | None:
    """Seconds this process's CPUs have been busy (not idle or waiting on storage) since boot, by Linux's
    ``/proc/stat``; None elsewhere."""
    import os

    cpus = {f"cpu{cpu}" for cpu in os.sched_getaffinity(0)} if hasattr(os, "sched_getaffinity") else None
    try:
        with open("/proc/stat") as stat:
            lines = [line.split() for line in stat if line.startswith("cpu") and not line.startswith("cpu ")]
    except OSError:
        return None
    ticks = sum(sum(int(v) for v in fields[1:]) - int(fields[4]) - int(fields[5])  # less idle and iowait
                for fields in lines if cpus is None or fields[0] in cpus)  # fmt: skip
    return ticks / os.sysconf("SC_CLK_TCK")


class Workers:
    """Worker processes on this machine, each training one chunk at a time with ``threads`` torch threads.

    Forked from a fresh server process that has imported torch and this
    module once (spawned where the system has no fork server): never from
    this process, whatever threads it runs.  Each is sent a feature set once, its tensors in shared memory (torch's
    multiprocessing pickler moves them there: no copy per worker), and then
    chunks; it reports when a chunk starts, its progress, and its
    predictions with the seconds they took.  A task's error is raised here
    as itself; a worker that dies (the system's out-of-memory killer) is one
    clear error.  Leaving the block stops every worker.
    """

    def __init__(self, workers: int, threads: int, trainer: Trainer):
        import multiprocessing

        import torch.multiprocessing  # noqa: F401  (registers the pickler that shares tensors' memory)

        if "forkserver" in multiprocessing.get_all_start_methods():  # a clean process, forked again for each pool
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(["budget.execute"])
        else:
            context = multiprocessing.get_context("spawn")
        self.connections, self.processes, self.held, self.busy = [], [], [], []
        for _ in range(workers):
            here, there = context.Pipe()
            process = context.Process(target=_work, args=(there, threads, trainer), daemon=True)
            process.start()
            there.close()
            self.connections.append(here)
            self.processes.append(process)
            self.held.append(set())  # the feature sets a worker holds, by name
            self.busy.append(None)  # the task a worker trains
        self.tasks = 0

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *_) -> None:
        for connection, process in zip(self.connections, self.processes, strict=True):
            try:
                connection.send(None)
            except OSError:
                pass
            process.join(timeout=5 if process.is_alive() else 0)
            if process.is_alive():
                process.terminate()
                process.join()
            connection.close()

    def idle(self) -> list[int]:
        return [worker for worker, task in enumerate(self.busy) if task is None]

    def send(self, worker: int, job: Job, runs: list[Run], n_classes: int, train: TrainConfig,
             uploaded: DeviceFeatures | None) -> int:  # fmt: skip
        """Give ``worker`` a chunk of ``job`` (its feature set first, if it has not got it); return the task's number."""
        if job.name not in self.held[worker]:
            inputs = job.inputs if uploaded is None else {part: replace(features, frames=None)
                                                          for part, features in job.inputs.items()}  # fmt: skip
            self.connections[worker].send(("inputs", job.name, inputs, uploaded))
            self.held[worker].add(job.name)
        self.tasks += 1
        self.connections[worker].send(("train", self.tasks, job.head, job.name, job.labels, runs, n_classes, train))
        self.busy[worker] = self.tasks
        return self.tasks

    def events(self) -> Iterator[tuple]:
        """Wait for what the busy workers report, and yield it: ``(task, "started")``, ``(task, "advance", units)``,
        ``(task, "done", predictions, seconds)``."""
        from multiprocessing.connection import wait

        busy = [worker for worker, task in enumerate(self.busy) if task is not None]
        ready = set(wait([self.connections[w] for w in busy] + [self.processes[w].sentinel for w in busy]))
        for worker in busy:
            connection = self.connections[worker]
            while connection in ready and connection.poll():
                try:
                    task, event, *body = connection.recv()
                except EOFError:
                    break
                if event == "error":
                    error, trace = body
                    if isinstance(error, BudgetError):
                        raise error
                    raise RuntimeError(f"a training worker failed:\n{trace}") from error
                if event == "done":
                    self.busy[worker] = None
                yield task, event, *body
            if self.busy[worker] is not None and not self.processes[worker].is_alive():
                code = self.processes[worker].exitcode
                raise BudgetError(
                    f"a training worker stopped (exit code {code}{', killed: most likely out of memory' if code == -9 else ''}"
                    "); train in fewer processes (--workers 1 trains in this one) or with less memory a run (smaller "
                    "memory_mb, shorter crops)"
                )


def _work(connection, threads: int, trainer: Trainer) -> None:
    """A worker process: train each chunk sent, reporting as :meth:`Workers.events` reads, until sent None."""
    import torch

    torch.set_num_threads(threads)
    keep_freed_memory()
    held = {}
    while (message := connection.recv()) is not None:
        if message[0] == "inputs":
            _, name, inputs, uploaded = message
            held[name] = (inputs, uploaded)
            continue
        _, task, head, name, labels, runs, n_classes, train = message
        inputs, uploaded = held[name]
        connection.send((task, "started"))
        progress = _Progress(connection, task)
        try:
            started = time.perf_counter()
            predictions = trainer(head, inputs, labels, runs, n_classes, train, advance=progress, uploaded=uploaded)
            progress.flush()
            connection.send((task, "done", predictions, time.perf_counter() - started))
        except Exception as error:  # raised in the study's process, where the user sees it
            try:
                connection.send((task, "error", error, traceback.format_exc()))
            except Exception:  # an error that does not pickle: its text
                connection.send((task, "error", RuntimeError(repr(error)), traceback.format_exc()))


class _Progress:
    """A worker's ``advance``: units done, sent at most every :data:`PROGRESS_EVERY` seconds."""

    def __init__(self, connection, task: int):
        self.connection, self.task, self.units, self.sent = connection, task, 0, time.perf_counter()

    def __call__(self, units: int) -> None:
        self.units += units
        if time.perf_counter() - self.sent >= PROGRESS_EVERY:
            self.flush()

    def flush(self) -> None:
        if self.units:
            self.connection.send((self.task, "advance", self.units))
            self.units, self.sent = 0, time.perf_counter()
