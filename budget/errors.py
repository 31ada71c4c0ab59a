"""The toolkit's exception types.

A :class:`BudgetError` is a problem with the user's input or environment that
the CLI prints as one line, without a traceback.
"""

import math
import os
from pathlib import Path


class BudgetError(Exception):
    """A user-facing error: bad input, missing data, an impossible request."""


class ModelLoadError(BudgetError):
    """A model folder whose weights or tokenizer cannot be loaded: it stops an extraction, never fails each utterance."""


class AudioError(BudgetError):
    """An audio file that cannot be used, with the file and the reason."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def check_number(key: str, value, integer: bool = False, minimum: float | None = None) -> None:
    """A setting that must be a finite number (an integer where ``integer``) of at least ``minimum``, or one clear error."""
    kind = int if integer else int | float
    if (
        isinstance(value, bool) or not isinstance(value, kind) or not math.isfinite(value)
        or (minimum is not None and value < minimum)
    ):  # fmt: skip
        what = "an integer" if integer else "a finite number" if isinstance(value, float) and not math.isfinite(value) else "a number"
        bound = f" of at least {minimum:g}" if minimum is not None else ""
        raise BudgetError(f"{key} must be {what}{bound}; got {value!r}")


def check_path(key: str, value) -> Path:
    """A path setting given as ``str`` or ``os.PathLike``, as a :class:`~pathlib.Path`; any other type is one clear
    error naming the setting."""
    if isinstance(value, str | os.PathLike) and not isinstance(value, bytes):
        path = Path(value)
        if str(path) and str(value).strip():
            return path
    raise BudgetError(f"{key} must be a path (a str or os.PathLike); got {value!r}")
