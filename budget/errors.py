"""The toolkit's exception types.

A :class:`BudgetError` is a problem with the user's input or environment that
the CLI prints as one line, without a traceback.
"""


class BudgetError(Exception):
    """A user-facing error: bad input, missing data, an impossible request."""


class AudioError(BudgetError):
    """An audio file that cannot be used, with the file and the reason."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")
