"""budget: how many labelled examples does a speech emotion recognition model need?

From Python: ``budget.curve(...)``, ``budget.compare(...)``, ``budget.acquire(...)``,
``budget.select(...)``, ``budget.extract(...)``, ``budget.load(run_dir)``, ``budget.plan(target)``
and ``budget.report()`` (:mod:`budget.api`, loaded on first use so ``import budget`` stays light).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("budget-ser")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

_API = ("AcquisitionResult", "StudyResult", "acquire", "compare", "curve", "extract", "load", "plan", "report", "select")
__all__ = [*_API, "__version__"]


def __getattr__(name: str):
    if name in _API:
        from budget import api

        return getattr(api, name)
    raise AttributeError(f"module 'budget' has no attribute {name!r}")
