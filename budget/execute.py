"""Executing a study's jobs: chunks trained in turn, timed against the cost model, each written as one part.

:class:`LocalExecutor` trains in this process.  It is the one seam another
executor (a cluster's) replaces: it receives the jobs of one table, trains
what the run folder's parts lack, and hands every trained chunk to the run
folder, so resuming, provenance and tables do not depend on where runs train.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from budget.engine.config import TrainConfig
from budget.engine.cost import CostModel
from budget.engine.packed import DeviceFeatures
from budget.grid import Job, Run
from budget.metrics import run_metrics
from budget.progress import progress_bar
from budget.registry import HeadSpec, head_spec
from budget.results import RESULT_KEY
from budget.runfolder import RunFolder

#: :func:`budget.registry.train`'s protocol: head, inputs by part, labels, runs, classes, config; tests hand in their own.
Trainer = Callable[..., list[np.ndarray]]


class LocalExecutor:
    """Trains a study's jobs in this process into ``folder``, one part file per chunk, with one progress bar and ETA."""

    def __init__(self, folder: RunFolder, trainer: Trainer, classes: list[str], fold_names: dict[int, str], log):
        self.folder, self.trainer, self.classes, self.fold_names, self.log = folder, trainer, classes, fold_names, log

    def run(self, jobs: list[Job], table: str, train: TrainConfig) -> None:
        """Train what ``table``'s parts lack."""
        finished = self.folder.current(table, {(job.name, job.head): job.digest for job in jobs}, self.log)
        done = {tuple(str(v) for v in row) for row in finished[RESULT_KEY].itertuples(index=False)}
        todo = [job.without(done) for job in jobs]
        todo = [job for job in todo if job.runs]
        if not todo:
            return
        n_classes = len(self.classes)
        uploaded: dict[str, DeviceFeatures] = {}
        models = [
            head_spec(job.head).cost_model(job.inputs, job.labels, job.runs, n_classes, train,
                                           _uploaded(job, train, uploaded))
            for job in todo
        ]  # fmt: skip
        by_head: dict[str, float] = {}
        for model, job in zip(models, todo, strict=True):
            by_head[job.head] = by_head.get(job.head, 0.0) + _seconds(model, head_spec(job.head), job.runs, train)
        total = sum(by_head.values())
        heads = ", ".join(f"{head} {_duration(seconds)}" for head, seconds in by_head.items())
        self.log(f"estimated training time: {_duration(total)} for {sum(len(j.runs) for j in todo)} runs ({heads}; "
                 "each head timed at its smallest and largest size)")  # fmt: skip
        with progress_bar(max(total, 1e-9), "training", unit="s") as advance:
            for job, model in zip(todo, models, strict=True):
                spec = head_spec(job.head)
                for step_count in sorted({spec.units(run, train) for run in job.runs}):
                    group = [run for run in job.runs if spec.units(run, train) == step_count]
                    size = spec.chunk(job.single, train, n_classes)
                    for start in range(0, len(group), size):
                        chunk = group[start : start + size]
                        estimate = _seconds(model, spec, chunk, train)
                        cost = estimate / sum(spec.units(run, train) for run in chunk)
                        tick = lambda n, cost=cost: advance(n * cost)  # noqa: E731
                        started = time.perf_counter()
                        predictions = self.trainer(job.head, job.inputs, job.labels, chunk, n_classes, train,
                                                   advance=tick, uploaded=uploaded.get(job.name))  # fmt: skip
                        seconds = time.perf_counter() - started
                        self.folder.write_part(self._rows(job, chunk, predictions, (seconds, estimate), train), table)

    def _rows(self, job: Job, runs: list[Run], predictions, seconds: tuple[float, float], train: TrainConfig) -> list[dict]:
        """A trained chunk's result rows; ``seconds`` is (measured, estimated) for the whole chunk."""
        measured, estimated = seconds
        spec = head_spec(job.head)
        return [
            {
                "features": job.name,
                "head": job.head,
                "size": str(run.size),
                "n_train": len(run.train),
                "fold": run.fold,
                "fold_name": self.fold_names[run.fold],
                "seed": run.seed,
                **run_metrics(job.labels[run.test], predicted, self.classes),
                "schedule": spec.schedule(train),
                "steps": spec.steps(train, len(run.train)),  # L-BFGS: its iteration cap
                "train_seconds": measured / len(runs),
                "estimated_seconds": estimated / len(runs),  # the cost model's price, to check the ETA against
                "inputs": job.digest,
            }
            for run, predicted in zip(runs, predictions, strict=True)
        ]


def _uploaded(job: Job, train: TrainConfig, uploaded: dict[str, DeviceFeatures]) -> DeviceFeatures | None:
    """The job's features on the training device, uploaded once per feature set."""
    if not head_spec(job.head).uploads:
        return None
    if job.name not in uploaded:
        import torch

        uploaded[job.name] = DeviceFeatures.upload(job.single, torch.device(train.device))
    return uploaded[job.name]


def _seconds(model: CostModel, spec: HeadSpec, runs: list[Run], train: TrainConfig) -> float:
    """What ``runs`` of one head cost by its model: every run's units at its own size's price."""
    return sum(model.unit_seconds(len(run.train)) * spec.units(run, train) for run in runs)


def _duration(seconds: float) -> str:
    """A time as a person reads it: tenths of a second under 10 s, minutes, hours."""
    if seconds < 9.5:
        return f"{seconds:.1f} s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min" if seconds < 600 else f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
