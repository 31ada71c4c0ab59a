"""Speaker-independent cross-validation folds over a manifest's ``group``.

With at most :data:`MAX_LEAVE_ONE_OUT_GROUPS` groups every group is its own
test fold (IEMOCAP's 5 sessions, EmoDB's 10 speakers); with more, groups are
dealt into ``n_folds`` folds, stratified by label where the label counts allow
(scikit-learn's ``StratifiedGroupKFold``).  Folds are deterministic for a
given seed, and a group never straddles two folds.
"""

from __future__ import annotations

import warnings
from os import PathLike

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupKFold, StratifiedGroupKFold

from budget.errors import BudgetError
from budget.labels import class_order

MAX_LEAVE_ONE_OUT_GROUPS = 10
N_FOLDS = 5


def assign_folds(manifest: pd.DataFrame, n_folds: int = N_FOLDS, seed: int = 0) -> pd.Series:
    """The test fold (0, 1, ...) of every utterance, aligned with ``manifest``'s index."""
    groups = manifest["group"].astype(str)
    names = sorted(groups.unique())
    if len(names) < 2:
        raise BudgetError(f"cross-validation needs at least 2 groups (speakers or sessions); found {len(names)}")
    if len(names) <= MAX_LEAVE_ONE_OUT_GROUPS:
        return groups.map({name: i for i, name in enumerate(names)}).rename("fold").astype(int)
    if n_folds < 2 or n_folds > len(names):
        raise BudgetError(f"n_folds must be between 2 and the number of groups ({len(names)}); got {n_folds}")
    # Groups sorted by name first, so the folds do not depend on the manifest's row order.
    order = np.lexsort((manifest["utt_id"].to_numpy(), groups.to_numpy()))
    labels = manifest["label"].to_numpy()[order]
    group_array = groups.to_numpy()[order]
    groups_per_label = manifest.groupby("label")["group"].nunique()
    if groups_per_label.min() >= n_folds:
        splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    else:
        splitter = GroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    fold = np.empty(len(manifest), dtype=int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "least populated class" notes; stratification is best effort
        for i, (_, test) in enumerate(splitter.split(np.zeros(len(order)), labels, group_array)):
            fold[order[test]] = i
    return pd.Series(fold, index=manifest.index, name="fold")


def fold_names(manifest: pd.DataFrame, folds: pd.Series) -> dict[int, str]:
    """A name per fold that says what it holds: its groups (speakers, sessions), sorted and joined by ``+``.

    Reports and ``provenance.json`` carry these names, so a fold design can be
    audited and reproduced.
    """
    return {int(fold): "+".join(sorted(map(str, groups.unique()))) for fold, groups in manifest["group"].groupby(folds)}


def classes_missing(manifest: pd.DataFrame, folds: pd.Series, classes: list[str]) -> dict[int, list[str]]:
    """The classes each held-out fold lacks (a speaker who never expressed one), for folds that lack any."""
    held = pd.crosstab(folds, manifest["label"]).reindex(columns=classes, fill_value=0)
    return {int(fold): [c for c in classes if row[c] == 0] for fold, row in held.iterrows() if (row == 0).any()}


def training_counts(manifest: pd.DataFrame, folds: pd.Series) -> pd.DataFrame:
    """Utterances per class available for training when each fold is the test fold.

    Rows are folds, columns classes.  Its minimum is the largest class-balanced
    training size per class that every fold can supply: the ceiling of a
    budget curve on this corpus.
    """
    totals = manifest.groupby("label").size().reindex(class_order(manifest["label"]))
    held_out = pd.crosstab(folds, manifest["label"]).reindex(columns=totals.index, fill_value=0)
    return (totals - held_out).rename_axis(index="fold", columns="label")


def read_fold_file(path: str | PathLike[str], manifest: pd.DataFrame, log=print) -> pd.Series:
    """Folds from a CSV the user hands in (a published design, such as EmoBox's): a ``fold`` column beside
    ``utt_id`` or ``group``.

    Every utterance must get a fold and every group stay within one (folds
    are speaker-independent); fold labels become 0, 1, ... in their sorted order.
    Groups the file lists and the corpus lacks are named in one ``log`` line; a file
    that names none of the corpus's is refused.
    """
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise BudgetError(f"fold file {path} is empty; it needs a 'fold' column beside 'utt_id' or 'group'") from None
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as error:
        raise BudgetError(f"cannot read fold file {path}: {error}") from None
    key = next((k for k in ("utt_id", "group") if k in table.columns), None)
    if key is None or "fold" not in table.columns:
        raise BudgetError(f"fold file {path} needs a 'fold' column beside 'utt_id' or 'group'; has {', '.join(table.columns)}")
    if table[key].duplicated().any():
        raise BudgetError(f"fold file {path}: {key} {table[key][table[key].duplicated()].iloc[0]!r} is listed twice")
    known = set(manifest[key].astype(str))
    if not known & set(table[key]):
        raise BudgetError(f"fold file {path} names no {key} of this corpus (it lists {len(table)}, e.g. "
                          f"{', '.join(table[key].iloc[:3])}); is it for another corpus?")  # fmt: skip
    if "group" in table.columns and (unknown := sorted(set(table["group"]) - set(manifest["group"].astype(str)))):
        log(f"fold file {path} lists {len(unknown)} group(s) this corpus lacks, ignored: {', '.join(unknown[:10])}"
            + (" ..." if len(unknown) > 10 else ""))  # fmt: skip
    given = manifest[key].astype(str).map(dict(zip(table[key], table["fold"], strict=True)))
    if given.isna().any():
        missing = manifest.loc[given.isna(), key].astype(str).unique()
        raise BudgetError(f"fold file {path} gives no fold for {len(missing)} {key}(s), e.g. {', '.join(missing[:3])}")
    straddling = given.groupby(manifest["group"]).nunique()
    if (straddling > 1).any():
        group = straddling[straddling > 1].index[0]
        raise BudgetError(f"fold file {path} puts group {group!r} in several folds: folds must be speaker-independent")
    labels = sorted(given.unique(), key=lambda v: (len(v), v))  # "2" before "10"
    if len(labels) < 2:
        raise BudgetError(f"fold file {path} has {len(labels)} fold; cross-validation needs at least 2")
    return given.map({label: i for i, label in enumerate(labels)}).astype(int).rename("fold")
