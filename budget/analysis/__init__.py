"""From a results table to curves, fitted laws, extrapolations and label budgets.

Modules: ``intervals`` (means and intervals of cells, convergence pairs,
paired gains), ``laws`` (the laws, their fits and the backtest that chooses
one), ``planning`` (labels needed, per class, and the recommendation).  The
names below are the package's interface to the report, the plots and the CLI.
"""

from budget.analysis.intervals import (
    FEW_FOLDS,
    aggregate,
    convergence_table,
    feature_gains,
    mean_interval,
)
from budget.analysis.laws import (
    BOUND_TOL,
    FAMILIES,
    LOG,
    MMF4,
    PLAUSIBLE_LIMIT,
    POW3,
    POW4,
    WBL4,
    CurveFit,
    LawFit,
    backtest,
    backtest_depth,
    choose_law,
    fit_curve,
    fit_law,
    on_bounds,
    predict,
    solve_n,
)
from budget.analysis.planning import (
    Plan,
    confusion_at,
    labels_needed,
    plan,
    recommend,
    target_ladder,
)

__all__ = [
    "BOUND_TOL",
    "CurveFit",
    "FAMILIES",
    "FEW_FOLDS",
    "LOG",
    "LawFit",
    "MMF4",
    "PLAUSIBLE_LIMIT",
    "POW3",
    "POW4",
    "Plan",
    "WBL4",
    "aggregate",
    "backtest",
    "backtest_depth",
    "choose_law",
    "confusion_at",
    "convergence_table",
    "feature_gains",
    "fit_curve",
    "fit_law",
    "labels_needed",
    "mean_interval",
    "on_bounds",
    "plan",
    "predict",
    "recommend",
    "solve_n",
    "target_ladder",
]
