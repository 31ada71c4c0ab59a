"""Studies: a grid of runs (features x heads x sizes x folds x seeds) to one results table.

A study reads a corpus, extracts what the feature store lacks, builds its
grid of runs (:mod:`budget.grid`: class-balanced subsets of the training
folds), hands it to an executor (:mod:`budget.execute`) that trains every head
on every feature set, and writes a tidy table with one row per (features,
head, size, fold, seed) into a run folder (:mod:`budget.runfolder`).

Modules: ``config`` (:class:`StudyConfig`: everything that defines a study,
its TOML keys, options and digest), ``run`` (:class:`Study`: prepare,
extract, build, execute, record), ``acquire`` (:class:`Acquisition`: which
clips to label, strategies simulated on the same folds) and ``select`` (a
real pool ranked for annotators).
"""

from budget.study.acquire import Acquisition, AcquisitionConfig
from budget.study.config import COMMAND_HEADS, DEFAULT_ENCODER, StudyConfig
from budget.study.run import (
    Study,
    StudyData,
    StudyInputs,
    default_run_dir,
    extract_features,
    prepare,
    scan_corpus,
)
from budget.study.select import select_clips

__all__ = [
    "Acquisition",
    "AcquisitionConfig",
    "COMMAND_HEADS",
    "DEFAULT_ENCODER",
    "Study",
    "StudyConfig",
    "StudyData",
    "StudyInputs",
    "default_run_dir",
    "extract_features",
    "prepare",
    "scan_corpus",
    "select_clips",
]
