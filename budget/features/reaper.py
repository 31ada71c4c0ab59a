"""Ends what a local Ray cluster leaves behind when the process that started it dies without stopping it.

:class:`budget.features.distributed.Cluster` runs this file as a script (the
standard library only, so it costs a few megabytes) beside a local cluster it
starts, with the cluster's processes as ``pid:start-time`` arguments.  It waits
until its standard input closes, which happens however the starting process
ends, then sends SIGTERM, and SIGKILL to any still running after a few
seconds, to those of the processes that are still the same ones (the same
start time).  After a clean ``ray.shutdown()`` none is left and it does
nothing; after a ``kill -9`` of the driver, Ray's dashboard and runtime-env
agents would otherwise wait a minute trying to tell a dead GCS that their
raylet died.  Linux only (it reads ``/proc``); elsewhere it is not started.
"""

from __future__ import annotations

import os
import signal
import sys
import time

#: How long processes have to end after SIGTERM before SIGKILL.
GRACE_SECONDS = 3.0


def start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (field 22 of ``/proc/<pid>/stat``), None when it has
    ended (gone, or a zombie waiting for its parent to collect it)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] in ("Z", "X") else fields[19]


def descendants(root: int) -> list[int]:
    """Every process below ``root`` in the process tree, from ``/proc``."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as handle:
                    parent = int(handle.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(name))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def end(processes: list[tuple[int, str]]) -> None:
    """SIGTERM, then SIGKILL after :data:`GRACE_SECONDS`, to each ``(pid, start time)`` still running."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        alive = [pid for pid, started in processes if start_time(pid) == started]
        for pid in alive:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + GRACE_SECONDS
        while alive and time.monotonic() < deadline:
            time.sleep(0.1)
            alive = [pid for pid in alive if start_time(pid) is not None]


def main(arguments: list[str]) -> None:
    processes = [(int(pid), started) for pid, started in (argument.split(":") for argument in arguments)]
    sys.stdin.buffer.read()  # returns when the starting process closes the pipe or dies
    end(processes)


if __name__ == "__main__":
    main(sys.argv[1:])
