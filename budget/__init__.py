"""budget: how many labelled examples does a speech emotion recognition model need?"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("budget-ser")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"
