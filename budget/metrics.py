"""Per-run test metrics, computed by scikit-learn."""

from __future__ import annotations

import json

import numpy as np
from sklearn.metrics import confusion_matrix

RECALL = "recall_"


def run_metrics(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]) -> dict[str, object]:
    """UA (balanced accuracy, the mean per-class recall), WA, macro-F1, per-class recall, confusion.

    The confusion matrix is a JSON list of rows (true class) by columns
    (predicted class), in ``classes`` order.  A class the test fold lacks has
    no recall (NaN, left out of every mean over runs) and enters neither UA
    nor macro-F1, which average over the classes the fold holds.

    Every figure is read off scikit-learn's confusion matrix, one call a run
    (its five metric functions, each validating its inputs again, cost five
    times as much, most of an acquisition study's time beside training);
    ``tests/test_training.py`` holds each equal to scikit-learn's own
    (``balanced_accuracy_score``, ``accuracy_score``, ``f1_score``,
    ``recall_score``).
    """
    confusion = confusion_matrix(y_true, y_pred, labels=np.arange(len(classes)))
    hits = np.diag(confusion).astype(float)
    held = confusion.sum(axis=1)  # true clips of each class
    present = held > 0
    recalls = np.full(len(classes), np.nan)
    recalls[present] = hits[present] / held[present]
    predicted = confusion.sum(axis=0)
    f1 = 2 * hits[present] / (held[present] + predicted[present])  # 2 tp / (2 tp + fp + fn)
    return {
        "ua": float(recalls[present].mean()),
        "wa": float(hits.sum() / len(y_true)),
        "macro_f1": float(f1.mean()),
        **{recall_column(name): float(r) for name, r in zip(classes, recalls, strict=True)},
        "confusion": json.dumps(confusion.tolist()),
        "n_test": int(len(y_true)),
    }


def recall_column(name: str) -> str:
    """The results table's column of one class's recall."""
    return f"{RECALL}{name}"


def result_classes(results) -> list[str]:
    """The classes of a results table, in order, from the per-class recall columns :func:`run_metrics` writes."""
    return [column.removeprefix(RECALL) for column in results.columns if column.startswith(RECALL)]
