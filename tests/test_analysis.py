"""Curve fits, intervals and plans against synthetic tables with a known truth."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from analysis_helpers import synthetic_results

from budget.analysis import LOG, POWER, aggregate, fit_curve, fit_law, mean_interval, plan, predict, solve_n
from budget.errors import BudgetError


def test_weighted_fit_recovers_a_noisy_power_law():
    rng = np.random.default_rng(1)
    n = np.array([10, 20, 40, 80, 160, 320, 640], float)
    truth = (0.72, 0.55, 0.45)
    recovered = []
    for _ in range(20):
        ua = predict(POWER, np.array(truth), n) + rng.normal(0, 0.003, len(n))
        recovered.append(fit_law(POWER, n, ua))
    a, b, c = np.median(recovered, axis=0)
    assert a == pytest.approx(truth[0], abs=0.02)
    assert b == pytest.approx(truth[1], rel=0.25)
    assert c == pytest.approx(truth[2], abs=0.1)


def test_log_law_is_recovered_and_chosen_for_log_data():
    results = synthetic_results(law=lambda n: 0.30 + 0.06 * np.log(n), noise_sd=0.002, fold_sd=0.002)
    curve = fit_curve(results, "lld", "mlp_pool")
    alpha, beta = curve.fits[LOG].params
    assert alpha == pytest.approx(0.30, abs=0.02) and beta == pytest.approx(0.06, abs=0.005)
    assert curve.fits[LOG].r2 > 0.99


def test_the_interval_has_its_coverage():
    rng = np.random.default_rng(7)
    truth, hits, trials = 0.6, 0, 300
    for _ in range(trials):
        grid = truth + rng.normal(0, 0.03, (10, 1)) + rng.normal(0, 0.01, (10, 3))
        _, low, high = mean_interval(grid, rng, n_boot=400)
        hits += low <= truth <= high
    assert 0.90 <= hits / trials <= 0.99


def test_aggregate_gives_one_row_per_size_with_intervals():
    table = aggregate(synthetic_results())
    assert list(table["size"]) == ["10", "20", "40", "80", "160", "320", "full"]
    assert (table["ci_low"] < table["mean"]).all() and (table["mean"] < table["ci_high"]).all()
    assert table.loc[0, "n_per_class"] == 10 and table.loc[0, "runs"] == 15


def test_plan_finds_the_labels_a_target_needs():
    results = synthetic_results()  # UA = 0.75 - 0.6 n^-0.5: 0.65 needs n = (0.6 / 0.1)^2 = 36
    curve = fit_curve(results, "lld", "mlp_pool")
    assert curve.chosen == POWER
    result = plan(results, 0.65, "lld", "mlp_pool", curve)
    assert result.per_class == pytest.approx(36, rel=0.15)
    low, high = result.per_class_interval
    assert low <= 36 <= high
    assert result.n_classes == 4 and "labels per class" in result.statement()
    assert result.ua_next_step[0] == pytest.approx(0.75 - 0.6 * 640**-0.5, abs=0.01)


def test_plan_refuses_a_target_above_the_ceiling():
    results = synthetic_results()
    result = plan(results, 0.80, "lld", "mlp_pool")
    assert math.isinf(result.per_class)
    assert "fitted ceiling" in result.statement() and "below the target 0.800" in result.statement()


def test_plan_ranks_classes_by_need():
    result = plan(synthetic_results(), 0.65, "lld", "mlp_pool")
    # happy has the lowest recall (offset -0.10) and still gains with labels
    assert result.class_needs.loc[0, "class"] == "happy"


def test_non_monotone_curves_are_flagged():
    results = synthetic_results(law=lambda n: 0.6 - 0.0005 * n + 0.0000005 * n**2, noise_sd=0.0, fold_sd=0.0)
    assert any("not monotone" in flag for flag in fit_curve(results, "lld", "mlp_pool").flags)


def test_too_few_sizes_cannot_be_planned():
    results = synthetic_results(sizes=(10,))
    with pytest.raises(BudgetError, match="no law can be fitted"):
        plan(results, 0.6, "lld", "mlp_pool")
    with pytest.raises(BudgetError, match="between 0 and 1"):
        plan(synthetic_results(), 65, "lld", "mlp_pool")


def test_solve_n_inverts_each_law():
    assert solve_n(POWER, np.array([0.75, 0.6, 0.5]), 0.65) == pytest.approx(36)
    assert solve_n(LOG, np.array([0.3, 0.05]), 0.5) == pytest.approx(math.exp(4))
    assert math.isinf(solve_n(LOG, np.array([0.3, -0.01]), 0.5))


def test_cells_keep_the_order_features_were_named_in():
    results = pd.concat([synthetic_results(features="lld"), synthetic_results(features="hf:/m/encoder")], ignore_index=True)
    table = aggregate(results)
    assert list(dict.fromkeys(table["features"])) == ["lld", "hf:/m/encoder"]


def test_a_target_within_the_measured_sizes_says_so():
    result = plan(synthetic_results(), 0.60, "lld", "mlp_pool")  # reached at n = 16, measured up to 320
    assert result.per_class < result.largest_measured
    assert "reached within the measured sizes" in result.statement()
