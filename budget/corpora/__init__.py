"""Corpus adapters: a corpus on disk to one manifest table.

>>> manifest = load_corpus("emodb", root="../shared/data/emodb", classes="neutral,happy,sad,angry")

Roots come from ``root`` or, when it is not given, from the data folder
(:func:`data_dir`, ``$BUDGET_DATA_DIR``), which holds one folder per corpus
named as in :data:`CORPORA` (``emodb/``, ``iemocap/``...).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from budget.corpora.cremad import read_cremad
from budget.corpora.csv_manifest import read_csv_manifest
from budget.corpora.emodb import EMODB_URL, EMODB_UTTERANCES, read_emodb
from budget.corpora.iemocap import read_iemocap
from budget.corpora.manifest import MANIFEST_COLUMNS, make_manifest, validate_manifest
from budget.corpora.ravdess import read_ravdess
from budget.errors import BudgetError
from budget.labels import select_classes

__all__ = [
    "CORPORA",
    "MANIFEST_COLUMNS",
    "CorpusAdapter",
    "data_dir",
    "find_root",
    "get_adapter",
    "load_corpus",
    "make_manifest",
    "validate_manifest",
]

DATA_DIR_ENV = "BUDGET_DATA_DIR"


@dataclass(frozen=True)
class CorpusAdapter:
    """How to read one corpus, and what a study on it uses by default."""

    name: str
    read: Callable[[Path], pd.DataFrame]
    default_classes: str
    description: str
    url: str | None = None  # official download, only for corpora free to redistribute
    expected_utterances: int | None = None  # what a complete download holds
    pinned_files: str | None = None  # a CSV beside this module: name, bytes and SHA-256 of every audio file of the download


CORPORA: dict[str, CorpusAdapter] = {
    adapter.name: adapter
    for adapter in (
        CorpusAdapter(
            "emodb",
            read_emodb,
            "all",
            "EmoDB, German acted speech, 10 speakers, 7 emotions",
            EMODB_URL,
            EMODB_UTTERANCES,
            "emodb_files.csv",
        ),
        CorpusAdapter("iemocap", read_iemocap, "iemocap4", "IEMOCAP full release, 5 sessions of dyadic speech"),
        CorpusAdapter("ravdess", read_ravdess, "all", "RAVDESS speech audio-only, 24 actors, 8 emotions"),
        CorpusAdapter("crema-d", read_cremad, "all", "CREMA-D, 91 actors, 6 emotions"),
        CorpusAdapter("csv", read_csv_manifest, "all", "any corpus as a CSV with path,label,speaker[,group,text]"),
    )
}
_ALIASES = {"cremad": "crema-d", "crema_d": "crema-d", "emo-db": "emodb"}


def get_adapter(name: str) -> CorpusAdapter:
    """The adapter registered under ``name`` (case-insensitive)."""
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in CORPORA:
        raise BudgetError(f"unknown corpus {name!r}; choose one of: {', '.join(CORPORA)}")
    return CORPORA[key]


def data_dir() -> Path:
    """The data folder: ``$BUDGET_DATA_DIR``, else ``$XDG_DATA_HOME/budget`` (``~/.local/share/budget``)."""
    if os.environ.get(DATA_DIR_ENV):
        return Path(os.environ[DATA_DIR_ENV]).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(xdg) / "budget"


def find_root(name: str, root: str | Path | None = None) -> Path:
    """The corpus folder: ``root`` if given, else ``<data dir>/<corpus name>``."""
    adapter = get_adapter(name)
    if root is not None:
        path = Path(root).expanduser()
        if not path.exists():
            raise BudgetError(f"{adapter.name}: root {path} does not exist")
        return path.resolve()
    path = data_dir() / adapter.name
    if not path.exists():
        hint = f", or run `budget corpus fetch {adapter.name}`" if adapter.url else ""
        raise BudgetError(
            f"{adapter.name}: not found at {path}; pass --root PATH or set {DATA_DIR_ENV} "
            f"to a folder that holds {adapter.name}/{hint}"
        )
    return path.resolve()


def load_corpus(name: str, root: str | Path | None = None, classes: str | None = None) -> pd.DataFrame:
    """Read a corpus into a manifest, keeping the classes of ``classes``.

    ``classes`` is a class spec (:mod:`budget.labels`); ``None`` uses the
    corpus's default (every class, or ``iemocap4`` for IEMOCAP).
    """
    adapter = get_adapter(name)
    manifest = adapter.read(find_root(adapter.name, root))
    return select_classes(manifest, classes if classes is not None else adapter.default_classes)
