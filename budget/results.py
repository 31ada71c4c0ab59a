"""The results table: one row per run, the key that names it, and the order rows are shown in.

A results table has one row per (features, head, size, fold, seed):
:data:`RESULT_KEY`.  ``size`` holds the size as written (``"125"`` or
``"full"``); :func:`budget.sampling.size_value` turns it into a number.
"""

from __future__ import annotations

import pandas as pd

from budget.sampling import size_value

RESULT_KEY = ["features", "head", "size", "fold", "seed"]
#: A learning curve: one feature set and one head.
CURVE_KEYS = ["features", "head"]


def sort_results(table: pd.DataFrame, order: dict[str, list[str]] | None = None) -> pd.DataFrame:
    """Rows by features and head (as listed in ``order``, else in order of first appearance), then sizes
    ascending with ``full`` last, then fold and seed where the table has them."""
    order = order or {}
    keys = pd.DataFrame(index=table.index)
    for key in CURVE_KEYS:
        names = order.get(key) or list(pd.unique(table[key]))
        keys[key] = table[key].map({name: i for i, name in enumerate(names)})
    keys["size"] = table["size"].map(size_value)
    for key in ("fold", "seed"):
        if key in table:
            keys[key] = table[key]
    return table.loc[keys.sort_values(list(keys.columns), kind="stable").index].reset_index(drop=True)
