"""Progress bars for long loops, drawn on stderr so stdout stays for results."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

T = TypeVar("T")

_console = Console(stderr=True)


def progress(items: Iterable[T], total: int, description: str) -> Iterator[T]:
    """Yield ``items`` while drawing a bar with count, elapsed time and ETA.

    The bar is drawn only on a terminal; in logs and CI it stays silent.
    """
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=_console, transient=True, disable=not _console.is_terminal) as bar:
        yield from bar.track(items, total=total, description=description)


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
