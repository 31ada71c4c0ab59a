"""The manifest: one row per utterance, the table every later layer reads.

Columns every adapter provides (all strings):

``utt_id``
    unique utterance id;
``path``
    absolute path of the audio file;
``label``
    canonical emotion name (:mod:`budget.labels`);
``speaker``
    speaker id;
``group``
    the unit of speaker-independent cross-validation (IEMOCAP session,
    EmoDB speaker, RAVDESS and CREMA-D actor);
``text``
    the transcript, ``""`` where the corpus has none;
``source_label``
    the corpus's own label code (``F``, ``hap``, ``03``...).

Adapters add extras where a corpus has them (``session``, ``gender``,
``duration``...); later layers never require them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd

from budget.errors import BudgetError

MANIFEST_COLUMNS: tuple[str, ...] = ("utt_id", "path", "label", "speaker", "group", "text", "source_label")


def make_manifest(rows: Iterable[Mapping[str, object]], corpus: str) -> pd.DataFrame:
    """Build a validated manifest from adapter rows, sorted by ``utt_id``."""
    frame = pd.DataFrame(list(rows))
    if frame.empty:
        raise BudgetError(f"{corpus}: no utterances found; is the root folder right?")
    if "text" not in frame.columns:
        frame["text"] = ""
    frame["text"] = frame["text"].fillna("")
    validate_manifest(frame, corpus)
    extras = [c for c in frame.columns if c not in MANIFEST_COLUMNS]
    return frame[[*MANIFEST_COLUMNS, *extras]].sort_values("utt_id", kind="stable").reset_index(drop=True)


def validate_manifest(frame: pd.DataFrame, corpus: str = "manifest") -> None:
    """Raise :class:`BudgetError` unless ``frame`` is a well-formed manifest."""
    missing = [c for c in MANIFEST_COLUMNS if c not in frame.columns]
    if missing:
        raise BudgetError(f"{corpus}: manifest lacks column(s) {', '.join(missing)}")
    for column in ("utt_id", "path", "label", "speaker", "group"):
        blank = frame[column].isna() | (frame[column].astype(str).str.strip() == "")
        if blank.any():
            first = frame.index[blank][0]
            raise BudgetError(f"{corpus}: {int(blank.sum())} row(s) have an empty {column!r} (first: row {first})")
    duplicated = frame["utt_id"][frame["utt_id"].duplicated()]
    if not duplicated.empty:
        raise BudgetError(f"{corpus}: duplicate utt_id {duplicated.iloc[0]!r} ({len(duplicated)} duplicates)")


def match_file_names(
    paths: Iterable[Path],
    pattern: re.Pattern,
    emotions: Mapping[str, str],
    corpus: str,
    scheme: str,
    example: str,
    folder: Path | None = None,
) -> list[tuple[Path, re.Match]]:
    """Each path with its file-name match, for corpora whose labels live in file names.

    A name that does not fit ``pattern``, or whose ``emotion`` group is not a
    key of ``emotions``, is collected; all of them raise one error.
    """
    matched, unparsed = [], []
    for path in sorted(paths):
        match = pattern.match(path.name)
        if match and match["emotion"] in emotions:
            matched.append((path, match))
        else:
            unparsed.append(path.name)
    if unparsed:
        where = f" in {folder}" if folder is not None else ""
        raise BudgetError(
            f"{corpus}: {len(unparsed)} file name(s){where} do not follow the {scheme} scheme "
            f"(e.g. {example}), first: {unparsed[0]}"
        )
    return matched
