"""Training runs of one head: the entry point (:func:`train_runs`) and the reference, scikit-learn's logreg."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from budget.engine.adam import train_ensemble
from budget.engine.config import TrainConfig, solved
from budget.engine.cost import members_per_chunk
from budget.engine.device import training_device
from budget.engine.lbfgs import solve
from budget.engine.packed import DeviceFeatures, prepared_inputs
from budget.errors import BudgetError
from budget.features.featureset import FeatureSet
from budget.grid import Run
from budget.heads import EnsembleHead
from budget.results import RunOutput

Advance = Callable[[int], None]


def train_runs(
    head: type[EnsembleHead],
    features: FeatureSet,
    labels: np.ndarray,
    runs: list[Run],
    n_classes: int,
    config: TrainConfig,
    advance: Advance | None = None,
    uploaded: DeviceFeatures | None = None,
    probabilities: bool = False,
) -> list[np.ndarray | RunOutput]:
    """Train every run and return its predictions on its test positions (with its learned layer weights, on
    stacked layers, and its class probabilities there with ``probabilities``: :class:`budget.results.RunOutput`).

    Runs of one call must share a step count (any sizes under the ``steps``
    schedule).  ``labels`` are class indices aligned with the feature set's
    rows.  ``advance(n)`` is told of every n run-steps done.
    """
    if not (isinstance(head, type) and issubclass(head, EnsembleHead)):
        raise BudgetError(f"{head!r} is not an ensemble head; budget.registry trains the others")
    if not runs:
        return []
    if not solved(head, config) and len({config.steps_for(len(run.train)) for run in runs}) != 1:
        raise BudgetError("runs trained together must take the same number of steps")
    device = training_device(config)
    inputs = uploaded or DeviceFeatures.upload(features, device)
    fit = solve if solved(head, config) else train_ensemble
    inputs = prepared_inputs(head, inputs, config)  # before free memory sizes the chunks
    chunk = members_per_chunk(head, inputs, config, device, n_classes, max(len(run.train) for run in runs))
    predictions: list[np.ndarray | RunOutput] = []
    for start in range(0, len(runs), chunk):
        try:
            predictions += fit(head, inputs, labels, runs[start : start + chunk], n_classes, config, advance, probabilities)
        except torch.cuda.OutOfMemoryError:
            if solved(head, config) and not head.pools_first:
                raise BudgetError(
                    f"CUDA out of memory fitting {head.name} on one run's frames; "
                    "crop utterances shorter (--max-seconds) or train this head with --device cpu"
                ) from None
            raise BudgetError(
                f"CUDA out of memory training {head.name} with {min(chunk, len(runs))} runs at once; set a smaller "
                f"memory_mb in the study's config (now {config.memory_mb or 'from free memory'})"
            ) from None
    return predictions


def train_logreg(features: FeatureSet, labels: np.ndarray, run: Run, c: float, n_classes: int | None = None
                 ) -> np.ndarray | RunOutput:  # fmt: skip
    """The reference: scikit-learn logistic regression on standardised mean-pooled features; given ``n_classes``,
    with the class probabilities of every class (zero for one the run never saw) on the test positions."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))
    model.fit(features.mean[run.train], labels[run.train])
    predictions = model.predict(features.mean[run.test])
    if n_classes is None:
        return predictions
    probabilities = np.zeros((len(run.test), n_classes))
    probabilities[:, model.classes_] = model.predict_proba(features.mean[run.test])
    return RunOutput(predictions, probabilities=probabilities)

