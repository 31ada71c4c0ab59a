"""Per-run test metrics, computed by scikit-learn."""

from __future__ import annotations

import json
import warnings

import numpy as np
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score, recall_score

RECALL = "recall_"


def run_metrics(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]) -> dict[str, object]:
    """UA (balanced accuracy, the mean per-class recall), WA, macro-F1, per-class recall, confusion.

    The confusion matrix is a JSON list of rows (true class) by columns
    (predicted class), in ``classes`` order.  A class the test fold lacks has
    no recall (NaN, left out of every mean over runs) and enters neither UA
    nor macro-F1, which average over the classes the fold holds.
    """
    labels = list(range(len(classes)))
    recalls = recall_score(y_true, y_pred, labels=labels, average=None, zero_division=np.nan)
    with warnings.catch_warnings():  # the study says once which folds lack which class
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        ua = balanced_accuracy_score(y_true, y_pred)
    return {
        "ua": float(ua),
        "wa": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=np.unique(y_true), average="macro", zero_division=0)),
        **{recall_column(name): float(r) for name, r in zip(classes, recalls, strict=True)},
        "confusion": json.dumps(confusion_matrix(y_true, y_pred, labels=labels).tolist()),
        "n_test": int(len(y_true)),
    }


def recall_column(name: str) -> str:
    """The results table's column of one class's recall."""
    return f"{RECALL}{name}"


def result_classes(results) -> list[str]:
    """The classes of a results table, in order, from the per-class recall columns :func:`run_metrics` writes."""
    return [column.removeprefix(RECALL) for column in results.columns if column.startswith(RECALL)]
