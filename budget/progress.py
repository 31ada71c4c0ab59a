"""Progress bars for long work, drawn on stderr so stdout stays for results.

Bars are drawn only on a terminal; in logs and CI they stay silent.
"""

from __future__ import annotations

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


@contextmanager
def progress_bar(total: int, description: str, unit: str = "it") -> Iterator[Callable[[int], None]]:
    """A bar with count, rate, elapsed time and ETA; yields ``advance(n)``."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _RateColumn(unit),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=_console, transient=True, disable=not _console.is_terminal) as bar:
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
