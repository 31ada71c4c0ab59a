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
from pathlib import Path

from budget.errors import BudgetError

#: How to say where work runs: ``local``, ``ray`` (a local Ray cluster) or ``ray:ADDRESS`` (``ray:auto``: a running one).
EXECUTORS = ("local", "ray", "ray:ADDRESS")


def check_executor(spec: str) -> None:
    if not isinstance(spec, str) or not (spec in ("local", "ray") or (spec.startswith("ray:") and len(spec) > 4)):
        raise BudgetError(f"executor must be one of {', '.join(EXECUTORS)}; got {spec!r}")


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

    def __init__(self, spec: str):
        check_executor(spec)
        self.ray, self.address = require_ray(), spec.partition(":")[2] or None
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


def cluster(spec: str):
    """:class:`Cluster` for a Ray executor, nothing for ``local``: a block whose Ray work shares one cluster."""
    return nullcontext() if spec == "local" else Cluster(spec)


def extract_on_cluster(spec: str, runner, batches: Iterable, extract: Callable, threads: int) -> Iterator:
    """``extract(runner, inputs, reasons) -> outputs`` for every ``(key, inputs, reasons)`` of ``batches`` on Ray
    workers (one encoder per worker, ``threads`` CPUs and torch threads each); yields ``(key, inputs, reasons,
    outputs)`` in the batches' order.  Batches are read only as workers become free, so the caller never holds
    more audio than the workers are busy with."""
    with Cluster(spec) as ray:

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
