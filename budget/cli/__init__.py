"""The ``budget`` command line: a thin skin over the Python API (:mod:`budget.api`).

Each command parses its options into the settings the API takes and calls it
(``curve``, ``compare``, ``extract``, ``plan``, ``report``), then prints what
came back.  Errors from bad input print one line (``error: ...``) and exit with
status 2.  One module per command group: ``corpus`` (``corpus list``, ``info``,
``fetch``), ``store`` (``extract``, ``features``), ``studies`` (``curve``,
``compare``), ``reports`` (``report``, ``plan``); ``common`` holds the app,
its consoles and the one-line errors, ``options`` the options built from the
settings' declarations.
"""

from budget.cli import corpus, store, studies, reports  # noqa: F401, I001  (each adds its commands, in this order)
from budget.cli.common import app

__all__ = ["app"]
