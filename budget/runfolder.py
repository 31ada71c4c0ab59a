"""The run folder: the one module that writes and reads what a study leaves on disk.

::

    <run>/config.json                  the resolved configuration and its digest
    <run>/provenance.json              corpus counts, classes, manifest checksum, store entries, versions, git revision
    <run>/parts/*.parquet              results, one file per trained chunk (what makes a study resumable)
    <run>/convergence/parts/*.parquet  the convergence check's runs at twice the budget
    <run>/budget4x/parts/*.parquet     (and budget8x) the runs of cells still learning, at 4x and 8x the budget
    <run>/results.parquet              every cell at the budget it needed (``budget``), and results.csv
    <run>/convergence.parquet          the retrained cells' runs at every budget (and convergence.csv)

Its tables are :mod:`budget.results` tables, written in their stored form
and read back through :func:`budget.results.read_stored`.  A folder belongs to
one configuration: claiming it with other settings is an error.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from budget import files
from budget.errors import BudgetError
from budget.features import display_name
from budget.grid import FeaturePair
from budget.metrics import result_classes
from budget.results import CURVE_KEYS, RESULT_KEY, read_stored, stored

RESULTS, CONVERGENCE = "results", "convergence"


def budget_table(budget: int) -> str:
    """The parts a study's runs at ``budget`` times its budget are written to: the first pass's, the convergence
    check's at twice the budget, and ``budget4x``, ``budget8x`` for cells still learning."""
    return RESULTS if budget == 1 else CONVERGENCE if budget == 2 else f"budget{budget}x"


class RunFolder:
    """Where a study writes: its configuration, parts, tables and provenance."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def parts(self, table: str = RESULTS) -> Path:
        """The part files of ``results`` or of the ``convergence`` check."""
        return self.path / "parts" if table == RESULTS else self.path / table / "parts"

    @contextmanager
    def writing(self) -> Iterator[None]:
        """The folder's writer lock, held while a study trains into it: a second study on it is refused.

        Temporary files a killed writer left are removed once the lock is held.
        """
        files.make_folder(self.path)
        busy = f"another study is writing {self.path}; wait for it to finish, or choose another --run-dir"
        with files.exclusive(self.path / ".lock", busy):
            for leftover in self.path.rglob(".*.tmp"):
                leftover.unlink(missing_ok=True)
            yield

    def claim(self, digest: str, settings: dict) -> None:
        """Make the folder this configuration's, or fail when it holds a study with other settings."""
        files.make_folder(self.parts())
        config_file = self.path / "config.json"
        if not config_file.is_file():
            files.write_json(config_file, {"digest": digest, **settings})
        elif files.read_json(config_file).get("digest") != digest:
            raise BudgetError(f"{self.path} holds a study with other settings; choose another --run-dir or remove it")

    def recorded_train(self) -> dict:
        """The training settings the folder's study was claimed with (empty for a new folder)."""
        config_file = self.path / "config.json"
        return files.read_json(config_file).get("train", {}) if config_file.is_file() else {}

    def part_files(self, table: str = RESULTS) -> list[Path]:
        folder = self.parts(table)
        return sorted(folder.glob("*.parquet")) if folder.is_dir() else []

    def finished(self, table: str = RESULTS) -> pd.DataFrame:
        """Every run finished so far (from the part files)."""
        found = self.part_files(table)
        if not found:
            return pd.DataFrame(columns=RESULT_KEY)
        return pd.concat([read_stored(files.read_parquet(f)) for f in found], ignore_index=True)

    def current(self, table: str, digests: dict[tuple[str, str], str], log) -> pd.DataFrame:
        """The finished runs still valid, given each (features, head)'s inputs digest.

        Parts whose inputs (utterances, labels, folds or stored features) have
        changed since, or that are damaged, are removed so their runs train again.
        """
        stale: dict[tuple[str, str], int] = {}
        kept = []
        for file in self.part_files(table):
            try:
                part = read_stored(files.read_parquet(file))
            except files.DamagedFile as error:
                log(f"{error}: its runs are trained again")
                file.unlink()
                continue
            key = (str(part["features"].iloc[0]), str(part["head"].iloc[0]))
            recorded = str(part["inputs"].iloc[0]) if "inputs" in part else None
            if key in digests and recorded != digests[key]:
                stale[key] = stale.get(key, 0) + len(part)
                file.unlink()
            else:
                kept.append(part)
        for (features, head), count in stale.items():
            log(f"{features} / {head}: the corpus, its audio or the stored features changed since {count} runs "
                "were trained; training them again")  # fmt: skip
        return pd.concat(kept, ignore_index=True) if kept else pd.DataFrame(columns=RESULT_KEY)

    def write_part(self, rows: list[dict], table: str = RESULTS) -> None:
        """One chunk's result rows, atomically, under a name fixed by the runs it holds."""
        key = [rows[0]["features"], rows[0]["head"],
               [(str(row["size"]), row["fold"], row["seed"], *([row["strategy"]] if "strategy" in row else []))
                for row in rows]]  # fmt: skip
        name = hashlib.sha1(json.dumps(key, default=int).encode()).hexdigest()[:16]
        files.make_folder(self.parts(table))
        files.write_parquet(self.parts(table) / f"{name}.parquet", stored(pd.DataFrame(rows)))

    def write_table(self, table: pd.DataFrame, name: str = RESULTS) -> None:
        files.write_parquet(self.path / f"{name}.parquet", stored(table))
        files.write_csv(self.path / f"{name}.csv", stored(table))

    def write_provenance(self, provenance: dict) -> None:
        files.write_json(self.path / "provenance.json", provenance)


@dataclass
class FinishedStudy:
    """A finished study read back: its results, resolved configuration, provenance and the convergence check's runs."""

    path: Path
    results: pd.DataFrame
    config: dict
    provenance: dict
    convergence: pd.DataFrame  # the retrained cells' runs at every budget (twice the budget only, in older folders)

    @classmethod
    def open(cls, path: str | Path) -> FinishedStudy:
        folder = Path(path)
        results_file = folder / f"{RESULTS}.parquet"
        if not results_file.is_file():
            raise BudgetError(f"{folder} holds no results.parquet; run `budget curve` or `budget compare` first")
        read = lambda name: files.read_json(folder / name) if (folder / name).is_file() else {}  # noqa: E731
        try:
            results = read_stored(files.read_parquet(results_file))
            checked = folder / f"{CONVERGENCE}.parquet"
            convergence = read_stored(files.read_parquet(checked)) if checked.is_file() else pd.DataFrame()
        except files.DamagedFile as error:
            raise BudgetError(f"{error}; run the study's command again: it rebuilds the tables from parts/") from None
        if results.empty:
            raise BudgetError(f"{folder}: the results table is empty")
        return cls(folder, results, read("config.json"), read("provenance.json"), convergence)

    @property
    def acquisition(self) -> bool:
        """Whether the study compared acquisition strategies (its rows have a ``strategy``): an acquisition study."""
        return "strategy" in self.results

    @property
    def classes(self) -> list[str]:
        """The study's classes in their order: from the provenance, or the results' recall columns."""
        return list(self.provenance.get("classes") or result_classes(self.results))

    @property
    def train(self) -> dict:
        """The training settings the study ran with (its schedule, budget and regularisation)."""
        return self.config.get("train", {})

    def curves(self) -> list[tuple[str, str]]:
        return list(self.results[CURVE_KEYS].drop_duplicates().itertuples(index=False, name=None))

    def display(self, features: str) -> str:
        """A feature set's name for a reader: an audio + text pair the study recorded as its two parts, shortened,
        any other feature set as :func:`budget.features.display_name` shortens it."""
        pair = self.provenance.get("feature_pairs", {}).get(features)
        return FeaturePair(*pair).display if pair else display_name(features)


def latest_run(runs_dir: str | Path = "runs") -> Path:
    """The most recently finished run folder under ``runs_dir``."""
    candidates = sorted(Path(runs_dir).glob(f"*/{RESULTS}.parquet"), key=lambda p: p.stat().st_mtime)
    if not candidates:
        raise BudgetError(f"no finished study under {runs_dir}/; name a run folder")
    return candidates[-1].parent
