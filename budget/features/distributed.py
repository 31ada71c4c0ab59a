"""Extraction on a Ray cluster: batches sent to workers that hold the encoder, shards committed by the caller.

The caller reads every batch's audio (so workers need neither the corpus nor
the store) and each worker actor loads the encoder once.  Each returned batch
becomes its own shard, so an interrupted distributed extraction resumes as a
local one does.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

from budget.errors import BudgetError

#: How to say where work runs: ``local``, ``ray`` (a local Ray cluster) or ``ray:ADDRESS`` (``ray:auto``: a running one).
EXECUTORS = ("local", "ray", "ray:ADDRESS")


@dataclass(frozen=True)
class Where:
    """Where work runs, parsed once from its spec (:data:`EXECUTORS`): in this process, or on Ray, a local cluster
    started for the work (``address`` None) or one joined by address."""

    ray: bool = False
    address: str | None = None

    @classmethod
    def parse(cls, spec: str | Where) -> Where:
        if isinstance(spec, Where):
            return spec
        if isinstance(spec, str) and spec in ("local", "ray"):
            return cls(ray=spec == "ray")
        if isinstance(spec, str) and spec.startswith("ray:") and len(spec) > 4:
            return cls(ray=True, address=spec[4:])
        raise BudgetError(f"executor must be one of {', '.join(EXECUTORS)}; got {spec!r}")

    @property
    def local(self) -> bool:
        return not self.ray

    def require(self) -> None:
        """Fail now, before any work, when Ray is asked for and not installed."""
        if self.ray:
            require_ray()

    def __str__(self) -> str:
        return "local" if self.local else "ray" if self.address is None else f"ray:{self.address}"


LOCAL = Where()


def require_ray():
    """The ray module, or one clear error naming the extra to install."""
    try:
        import ray
    except ImportError:
        raise BudgetError('the ray executor needs Ray: pip install "budget-ser[ray]"') from None
    return ray


class Cluster:
    """Ray for the duration of a ``with`` block: joined by address, or a local cluster started and stopped here.

    A local cluster keeps Ray's default token authentication, without Ray's notice of it, and on Linux has
    :mod:`budget.features.reaper` beside it, so its processes end with this one even when it is killed.
    """

    def __init__(self, where: Where):
        self.ray, self.address = require_ray(), where.address
        self.started = False
        self.reaper: subprocess.Popen | None = None

    def __enter__(self):
        if not self.ray.is_initialized():
            # Ray's notice that a new local cluster uses token authentication, on every command: not the user's concern
            logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
            self.ray.init(address=self.address, include_dashboard=False, log_to_driver=False, configure_logging=False)
            self.started = True
            if self.address is None and sys.platform.startswith("linux"):
                self.reaper = _start_reaper()
        return self.ray

    def __exit__(self, *exc) -> None:
        if self.started:
            self.ray.shutdown()
        if self.reaper is not None:
            self.reaper.stdin.close()  # the reaper finds nothing left after a clean shutdown
            self.reaper.wait()


def _start_reaper() -> subprocess.Popen:
    """:mod:`budget.features.reaper` watching the processes the local cluster started below this one."""
    from budget.features import reaper

    processes = [f"{pid}:{started}" for pid in reaper.descendants(os.getpid())
                 if (started := reaper.start_time(pid)) is not None]  # fmt: skip
    return subprocess.Popen([sys.executable, "-S", str(Path(reaper.__file__)), *processes], stdin=subprocess.PIPE,
                            start_new_session=True)  # fmt: skip


def fetched(ray, fetch: Callable):
    """``fetch()`` (a ``ray.get``), with a user error raised in a task raised here as itself: one line, as
    in-process."""
    try:
        return fetch()
    except ray.exceptions.RayTaskError as error:
        if isinstance(error.cause, BudgetError):
            raise error.cause from None
        raise


def cluster(where: Where):
    """:class:`Cluster` for Ray, nothing in this process: a block whose Ray work shares one cluster."""
    return nullcontext() if where.local else Cluster(where)


def extract_on_cluster(where: Where, runner, batches: Iterable, extract: Callable, threads: int) -> Iterator:
    """``extract(runner, inputs, reasons) -> outputs`` for every ``(key, inputs, reasons)`` of ``batches`` on Ray
    workers (one encoder per worker, ``threads`` CPUs and torch threads each); yields ``(key, inputs, reasons,
    outputs)`` in the batches' order.  Batches are read only as workers become free, so the caller never holds
    more audio than the workers are busy with."""
    with Cluster(where) as ray:

        class Worker:
            def __init__(self, runner):
                import torch

                torch.set_num_threads(threads)
                self.runner = runner

            def run(self, inputs, reasons):
                return extract(self.runner, inputs, reasons), reasons

        slots = max(1, int(ray.cluster_resources().get("CPU", 1) // threads))
        actor = ray.remote(num_cpus=threads, max_restarts=3, max_task_retries=3)(Worker)
        pool = ray.util.ActorPool([actor.remote(runner) for _ in range(slots)])
        source, submitted = iter(batches), deque()

        def submit() -> bool:
            item = next(source, None)
            if item is not None:
                key, inputs, reasons = item
                pool.submit(lambda worker, arguments: worker.run.remote(*arguments), (inputs, reasons))
                submitted.append((key, inputs))
            return item is not None

        more = True
        while more and pool.has_free():
            more = submit()
        while submitted:
            outputs, reasons = fetched(ray, pool.get_next)  # in submission order
            key, inputs = submitted.popleft()
            yield key, inputs, reasons, outputs
            more = more and submit()
