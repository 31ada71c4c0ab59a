"""Files written whole or not at all, and read back with one clear error when damaged.

A kill, a crash or a full disk in the middle of a write must leave the old file
(or none), never half of a new one that a later run would read as finished.
Every file goes to a temporary sibling of its own (named by the writer's
process and a random part, so two writers never share one), is flushed to the
disk, and is renamed into place; a failed write removes its temporary file and
raises a :class:`BudgetError` naming the file.  A folder that cannot be made
(a read-only disk, a file in the way) is one :class:`BudgetError` too.  A file damaged by other means (a copy
cut short, a disk error) is reported by :class:`DamagedFile` on reading.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from budget.errors import BudgetError


class DamagedFile(BudgetError):
    """A file that exists but cannot be read as what it should be."""


def read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise DamagedFile(f"{path} is damaged ({error})") from None


def read_parquet(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except (OSError, ValueError) as error:  # pyarrow's ArrowInvalid is a ValueError
        raise DamagedFile(f"{path} is damaged ({error})") from None


def make_folder(path: Path) -> Path:
    """Create ``path`` and its parents (an existing folder is fine); one clear error when the disk refuses."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise BudgetError(f"cannot create the folder {path}: {error.strerror or error}") from None
    return path


@contextlib.contextmanager
def exclusive(lock_file: Path, busy: str, wait_seconds: float = 0.0, log: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_file`` (an OS lock: released when its process dies, even by kill -9).

    While another process holds it, wait up to ``wait_seconds`` (saying so once
    through ``log``), then raise a :class:`BudgetError` with ``busy``.
    """
    try:
        handle = Path(lock_file).open("a")
    except OSError as error:
        raise BudgetError(f"cannot write {lock_file}: {error.strerror or error}") from None
    with handle:
        deadline = time.monotonic() + wait_seconds
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise BudgetError(busy) from None
                if log is not None:
                    limit = f"{wait_seconds / 60:.0f} min" if wait_seconds >= 60 else f"{wait_seconds:.0f} s"
                    log(f"{busy}; waiting for it (at most {limit})")
                    log = None
                time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def temporary_sibling(path: Path) -> Path:
    """A name beside ``path`` that no other writer (process or call) uses: ``.<name>.<pid>-<random>.tmp``."""
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")


def write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` for a temporary sibling of ``path``, flush it to disk, then rename it to ``path``."""
    path = Path(path)
    tmp = temporary_sibling(path)
    try:
        write(tmp)
        with tmp.open("rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as error:
        with contextlib.suppress(OSError):  # on a read-only disk the cleanup fails as the write did
            tmp.unlink(missing_ok=True)
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise BudgetError(f"no space left on the disk writing {path}; free some and run again (it resumes)") from None
        raise BudgetError(f"cannot write {path}: {error.strerror or error}") from None


def write_text(path: Path, text: str) -> None:
    write_atomically(path, lambda tmp: tmp.write_text(text))


def write_json(path: Path, value) -> None:
    write_text(path, json.dumps(value, indent=2, default=str))


def write_parquet(path: Path, table: pd.DataFrame) -> None:
    write_atomically(path, lambda tmp: table.to_parquet(tmp, index=False))


def write_csv(path: Path, table: pd.DataFrame) -> None:
    write_atomically(path, lambda tmp: table.to_csv(tmp, index=False))


def write_array(path: Path, array: np.ndarray) -> None:
    def save(tmp: Path) -> None:
        with tmp.open("wb") as handle:
            np.save(handle, array)

    write_atomically(path, save)
