"""From a results table to curves, fitted laws, extrapolations and label budgets.

Modules: ``intervals`` (means and intervals of cells, convergence pairs,
paired gains), ``laws`` (the laws, their fits and the backtest that chooses
one), ``planning`` (labels needed, per class), ``choice`` (configurations
against the best, with their costs, and the recommendation).  The
names below are the package's interface to the report, the plots and the CLI.
"""

from budget.analysis.choice import (
    against_best,
    measured_costs,
    recommend,
    recommendation,
    seconds_text,
)
from budget.analysis.intervals import (
    BUDGETS,
    CONVERGENCE_TOLERANCE,
    FEW_FOLDS,
    PairedDifference,
    aggregate,
    budget_ladder,
    cell_budgets,
    convergence_table,
    feature_gains,
    mean_interval,
    paired_difference,
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
    target_ladder,
)

__all__ = [
    "BOUND_TOL",
    "BUDGETS",
    "CONVERGENCE_TOLERANCE",
    "CurveFit",
    "FAMILIES",
    "FEW_FOLDS",
    "LOG",
    "LawFit",
    "MMF4",
    "PairedDifference",
    "PLAUSIBLE_LIMIT",
    "POW3",
    "POW4",
    "Plan",
    "WBL4",
    "against_best",
    "aggregate",
    "backtest",
    "backtest_depth",
    "budget_ladder",
    "cell_budgets",
    "choose_law",
    "confusion_at",
    "convergence_table",
    "feature_gains",
    "fit_curve",
    "fit_law",
    "labels_needed",
    "mean_interval",
    "measured_costs",
    "paired_difference",
    "on_bounds",
    "plan",
    "predict",
    "recommend",
    "recommendation",
    "seconds_text",
    "solve_n",
    "target_ladder",
]
