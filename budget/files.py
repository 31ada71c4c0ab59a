"""Files written whole or not at all, and read back with one clear error when damaged.

A kill, a crash or a full disk in the middle of a write must leave the old file
(or none), never half of a new one that a later run would read as finished.
Every file goes to a temporary sibling, is flushed to the disk, and is renamed
into place; a failed write removes its temporary file and raises a
:class:`BudgetError` naming the file.  A file damaged by other means (a copy
cut short, a disk error) is reported by :class:`DamagedFile` on reading.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Callable
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


def write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` for a temporary sibling of ``path``, flush it to disk, then rename it to ``path``."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        with tmp.open("rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as error:
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
