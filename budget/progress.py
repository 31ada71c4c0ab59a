"""Progress for long work on stderr, so stdout stays for results.

On a terminal, a bar; with output redirected (nohup, a SLURM job, CI), a plain
line every :data:`LOG_EVERY_SECONDS` with what is done, the elapsed time and
the ETA, so a log shows a long study advancing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.text import Text

T = TypeVar("T")

_console = Console(stderr=True)


class _RateColumn(ProgressColumn):
    """Items per second."""

    def __init__(self, unit: str):
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        return Text(f"{task.speed:.1f} {self.unit}/s" if task.speed else "", style="progress.data.speed")


def note(message: str) -> None:
    """One line on stderr, in a terminal and in logs alike: what long work is doing (waiting for a lock, say)."""
    _console.print(message, highlight=False, soft_wrap=True)


#: How often a progress line is written when output is not a terminal.
LOG_EVERY_SECONDS = 60.0


def duration(seconds: float) -> str:
    """A time as a person reads it: tenths of a second under 10 s, minutes, hours."""
    if seconds < 9.5:
        return f"{seconds:.1f} s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min" if seconds < 600 else f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def clock(seconds: float) -> str:
    """``1:02:03`` or ``2:03``: elapsed times and ETAs in log lines."""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class _LogLines:
    """Progress as plain lines, at most one every :data:`LOG_EVERY_SECONDS`: done of total (or ``done()``'s own
    words), elapsed, ETA (``eta()``'s, else from the rate so far)."""

    def __init__(self, total: float, description: str, unit: str, done: Callable[[], str] | None,
                 eta: Callable[[], float] | None = None):  # fmt: skip
        self.total, self.description, self.unit, self.done_text, self.eta = total, description, unit, done, eta
        self.done = 0.0
        self.started = self.last = time.monotonic()
        self.written = False

    def advance(self, n: float = 1) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last >= LOG_EVERY_SECONDS:
            self.last, self.written = now, True
            note(self.line(now))

    def close(self) -> None:
        """A last line when earlier ones were written, so a log shows the work finished."""
        if self.written:
            self.done = self.total
            note(self.line(time.monotonic()))

    def line(self, now: float) -> str:
        elapsed = now - self.started
        share = min(self.done / self.total, 1.0) if self.total else 1.0
        if self.eta is not None:
            eta = self.eta()
        else:
            eta = elapsed * (1 - share) / share if share > 0 else float("nan")
        done = self.done_text() if self.done_text else f"{self.done:.0f}/{self.total:.0f} {self.unit}"
        return (f"{self.description}: {done} ({100 * share:.0f}%), elapsed {clock(elapsed)}, "
                f"eta {clock(eta) if eta == eta else 'unknown'}")  # fmt: skip


class _CallColumn(ProgressColumn):
    """What a caller says is done (``"12/300 runs"``)."""

    def __init__(self, text: Callable[[], str]):
        super().__init__()
        self.text = text

    def render(self, task: Task) -> Text:
        return Text(self.text(), style="progress.download")


class _EtaColumn(ProgressColumn):
    """The time left as a caller predicts it."""

    def __init__(self, eta: Callable[[], float]):
        super().__init__()
        self.eta = eta

    def render(self, task: Task) -> Text:
        seconds = self.eta()
        return Text(clock(seconds) if seconds == seconds else "-:--", style="progress.remaining")


@contextmanager
def progress_bar(total: float, description: str, unit: str = "it", done: Callable[[], str] | None = None,
                 eta: Callable[[], float] | None = None) -> Iterator[Callable[[float], None]]:  # fmt: skip
    """A bar with count, rate, elapsed time and ETA on a terminal, log lines elsewhere; yields ``advance(n)``.

    ``done``: what a log line says is done (``"12/300 runs"``), where the count advanced is not what a reader
    counts; ``eta``: the seconds left as the caller predicts them, where the rate so far would not.
    """
    if not _console.is_terminal:
        lines = _LogLines(total, description, unit, done, eta)
        yield lines.advance
        lines.close()
        return
    counted = (TaskProgressColumn(), _CallColumn(done)) if done is not None else (MofNCompleteColumn(), _RateColumn(unit))
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        *counted,
        TimeElapsedColumn(),
        TextColumn("eta"),
        _EtaColumn(eta) if eta is not None else TimeRemainingColumn(),
    )
    with Progress(*columns, console=_console, transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n=1: bar.advance(task, n)


def progress(items: Iterable[T], total: int, description: str, unit: str = "it") -> Iterator[T]:
    """Yield ``items`` while drawing a bar."""
    with progress_bar(total, description, unit) as advance:
        for item in items:
            yield item
            advance(1)


def byte_progress() -> Progress:
    """A bar for transfers: bytes done, speed and ETA.  Use as a context manager."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    return Progress(*columns, console=_console, transient=True, disable=not _console.is_terminal)
