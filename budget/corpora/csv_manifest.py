"""Any corpus described by a CSV file.

Required columns ``path,label,speaker``; optional ``group`` (defaults to the
speaker), ``text``, ``utt_id`` (defaults to the path without its extension)
and any extras, which are kept.  Relative paths are relative to the CSV's
folder.  Labels are mapped to canonical names where known (``hap``, ``joy``
-> ``happy``); other labels are kept lower-cased, so a corpus can bring its
own classes.
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path

import pandas as pd

from budget.corpora.manifest import make_manifest
from budget.errors import BudgetError
from budget.labels import canonical_label, check_spelling

REQUIRED = ("path", "label", "speaker")


def read_csv_manifest(root: str | PathLike[str]) -> pd.DataFrame:
    """Read a CSV manifest; ``root`` is the CSV file or a folder holding ``manifest.csv``."""
    root = Path(root)
    csv_path = root / "manifest.csv" if root.is_dir() else root
    if not csv_path.is_file():
        raise BudgetError(f"csv: no manifest file at {csv_path}")
    try:
        table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        raise BudgetError(f"csv: cannot parse {csv_path}: {error}") from error
    table.columns = [str(c).strip() for c in table.columns]
    missing = [c for c in REQUIRED if c not in table.columns]
    if missing:
        raise BudgetError(
            f"csv: {csv_path} lacks column(s) {', '.join(missing)} (needs {', '.join(REQUIRED)}; optional group, text)"
        )
    for column in REQUIRED:
        blank = table[column].str.strip() == ""
        if blank.any():
            raise BudgetError(f"csv: {csv_path} row {int(blank.idxmax()) + 2} has an empty {column!r}")
    base = csv_path.parent
    paths = [Path(p) if Path(p).is_absolute() else (base / p) for p in table["path"]]
    table["source_label"] = table["label"]
    table["label"] = [canonical_label(label) for label in table["label"]]
    check_spelling(table["label"], f"csv: {csv_path}")
    if "utt_id" not in table.columns or (table["utt_id"].str.strip() == "").any():
        table["utt_id"] = [Path(p).with_suffix("").as_posix() for p in table["path"]]
    if "group" not in table.columns:
        table["group"] = table["speaker"]
    table["group"] = table["group"].where(table["group"].str.strip() != "", table["speaker"])
    table["path"] = [str(p) for p in paths]
    return make_manifest(table.to_dict("records"), "csv")
