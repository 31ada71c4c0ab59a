"""Curve fits, intervals and plans against synthetic tables with a known truth."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest
from analysis_helpers import synthetic_results

from budget.analysis import (
    BOUND_TOL,
    FAMILIES,
    LOG,
    MMF4,
    POW3,
    POW4,
    WBL4,
    LawFit,
    aggregate,
    backtest,
    backtest_depth,
    choose_law,
    feature_gains,
    fit_curve,
    fit_law,
    mean_interval,
    on_bounds,
    plan,
    predict,
    solve_n,
)
from budget.errors import BudgetError
from budget.report import Costs, plan_lines
from budget.results import stored
from budget.sampling import FULL, Size

#: One curve of each law, with UA between 0.3 and 0.85 over the sizes below and their doubling.
TRUTHS = {
    POW3: np.array([0.8, 0.6, 0.5]),
    POW4: np.array([0.8, 0.9, 0.7, 20.0]),
    MMF4: np.array([0.25, 12.0, 0.85, 0.7]),  # a shape other than 1: mmf4 with d = 1 is a pow4
    WBL4: np.array([0.03, 0.5, 0.85, 0.6]),
    LOG: np.array([0.3, 0.06]),
}
SIZES = 5 * 2.0 ** np.arange(7)  # 5 to 320 per class, doubling
#: Without noise only the optimiser separates a fit from the truth: curve_fit stops at relative changes of 1e-8
#: (its ftol and xtol), and directions where the loss is nearly flat (an offset near its bound) converge slower,
#: so allow a thousand times that: still a thousandth of a UA point.
CONVERGED = 1e-5


def test_weighted_fit_recovers_a_noisy_power_law():
    rng = np.random.default_rng(1)
    n = np.array([10, 20, 40, 80, 160, 320, 640], float)
    truth = (0.72, 0.55, 0.45)
    recovered = []
    for _ in range(20):
        ua = predict(POW3, np.array(truth), n) + rng.normal(0, 0.003, len(n))
        recovered.append(fit_law(POW3, n, ua))
    a, b, c = np.median(recovered, axis=0)
    # statistical, not rounding, bounds: UA noise sd 0.003 moves the ceiling by a few sds of the extrapolation,
    # and b and c trade off against each other (correlated estimates), so b to 25% and c to 0.1
    assert a == pytest.approx(truth[0], abs=0.02)
    assert b == pytest.approx(truth[1], rel=0.25)
    assert c == pytest.approx(truth[2], abs=0.1)


def test_log_law_is_recovered_and_chosen_for_log_data():
    results = synthetic_results(law=lambda n: 0.30 + 0.06 * np.log(n), noise_sd=0.002, fold_sd=0.002)
    curve = fit_curve(results, "lld", "mlp_pool")
    alpha, beta = curve.fits[LOG].params
    # fold and run noise of sd 0.002 each over 6 sizes: the intercept to 10 sds, the slope to 2.5 sds per ln-unit
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


def test_an_accuracy_interval_on_four_folds_stays_within_0_and_1_and_keeps_its_coverage():
    """Near 100% on 4 folds, t on 3 degrees of freedom runs past 1; the interval is cut there, covering as often."""
    rng = np.random.default_rng(11)
    truth, hits, trials, above = 0.95, 0, 300, 0
    for _ in range(trials):
        grid = truth + rng.normal(0, 0.04, (4, 1)) + rng.normal(0, 0.01, (4, 3))
        _, low, high = mean_interval(grid, rng, n_boot=400, bounds=(0.0, 1.0))
        _, _, unbounded = mean_interval(grid, rng, n_boot=400)
        assert 0.0 <= low <= high <= 1.0
        above += unbounded > 1
        hits += low <= truth <= high
    assert above > trials / 4  # the case the bound exists for is common here
    assert 0.90 <= hits / trials <= 0.995
    results = synthetic_results(sizes=(10,), folds=4, seeds=2, fold_sd=0.06, law=lambda n: 0.97 + 0 * n)
    table = aggregate(results)
    assert (table["ci_high"] <= 1.0).all() and (table["ci_low"] >= 0.0).all()


def test_a_plan_on_a_curve_that_falls_names_the_measured_size_that_reached_the_target():
    measured = {3: 0.25, 6: 0.20, 12: 0.19, 24: 0.18}  # falls with labels: no law of the family rises to 0.22
    law = np.vectorize(lambda n: measured[int(round(n))])
    results = synthetic_results(sizes=tuple(measured), law=law, full=False)
    answer = plan(results, 0.22, "lld", "mlp_pool")
    assert math.isinf(answer.per_class) and answer.first_reaching[0] == 3
    statement = answer.statement()
    assert "3 per class already measured UA 0.2" in statement and "does not reach" not in statement


def test_feature_gains_are_paired_by_fold_and_seed():
    """Fold effects shared by both feature sets cancel: a constant 3-point gain is measured exactly."""
    base = synthetic_results(sizes=(10, 20), folds=5, seeds=2, fold_sd=0.05)
    better = base.assign(features="hf:m", ua=base["ua"] + 0.03)
    gains = feature_gains(pd.concat([base, better], ignore_index=True))
    assert list(gains["size"]) == [10, 20, FULL] and (gains["runs"] == 10).all()
    np.testing.assert_allclose(gains["gain_points"], 3.0, atol=1e-9)
    np.testing.assert_allclose(gains["ci_high"] - gains["ci_low"], 0.0, atol=1e-9)  # no spread in the differences
    noisy = better.assign(ua=better["ua"] + np.random.default_rng(0).normal(0, 0.01, len(better)))
    wide = feature_gains(pd.concat([base, noisy], ignore_index=True))
    assert ((wide["ci_low"] < wide["gain_points"]) & (wide["gain_points"] < wide["ci_high"])).all()


def test_aggregate_gives_one_row_per_size_with_intervals():
    table = aggregate(synthetic_results())
    assert list(table["size"]) == [10, 20, 40, 80, 160, 320, FULL]
    assert (table["ci_low"] < table["mean"]).all() and (table["mean"] < table["ci_high"]).all()
    assert table.loc[0, "n_per_class"] == 10 and table.loc[0, "runs"] == 15


def test_plan_finds_the_labels_a_target_needs():
    results = synthetic_results()  # UA = 0.75 - 0.6 n^-0.5: 0.65 needs n = (0.6 / 0.1)^2 = 36
    curve = fit_curve(results, "lld", "mlp_pool")
    assert curve.chosen == POW3
    result = plan(results, 0.65, "lld", "mlp_pool", curve)
    # the 5-fold mean's sd (0.01 / sqrt 5 = 0.0045 UA) at the curve's slope at 36 (0.0008 UA a label) is ~5 labels
    assert result.per_class == pytest.approx(36, rel=0.15)
    low, high = result.per_class_interval
    assert low <= 36 <= high
    assert result.n_classes == 4 and "labels per class" in result.statement()
    assert result.ua_next_step[0] == pytest.approx(0.75 - 0.6 * 640**-0.5, abs=0.01)  # two fold-noise sds


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
    assert solve_n(POW3, np.array([0.75, 0.6, 0.5]), 0.65) == pytest.approx(36)
    assert solve_n(LOG, np.array([0.3, 0.05]), 0.5) == pytest.approx(math.exp(4))
    assert math.isinf(solve_n(LOG, np.array([0.3, -0.01]), 0.5))
    for law, params in TRUTHS.items():
        for n in (7.0, 150.0, 5000.0):
            # closed forms: a round trip loses only floating-point rounding, amplified by at most 1/exponent
            assert solve_n(law, params, float(predict(law, params, n))) == pytest.approx(n, rel=1e-9)
        if FAMILIES[law].ceiling:
            ceiling = params[FAMILIES[law].names.index(FAMILIES[law].ceiling)]
            assert math.isinf(solve_n(law, params, ceiling + 0.01))


def test_cells_keep_the_order_features_were_named_in():
    results = pd.concat([synthetic_results(features="lld"), synthetic_results(features="hf:/m/encoder")], ignore_index=True)
    table = aggregate(results)
    assert list(dict.fromkeys(table["features"])) == ["lld", "hf:/m/encoder"]


def test_a_target_within_the_measured_sizes_says_so():
    result = plan(synthetic_results(), 0.60, "lld", "mlp_pool")  # reached at n = 16, measured up to 320
    assert result.per_class < result.largest_measured
    assert "reached within the measured sizes" in result.statement()


@pytest.mark.parametrize("law", list(TRUTHS))
def test_each_law_is_recovered_from_a_noiseless_curve_of_its_own(law):
    truth = TRUTHS[law]
    params = fit_law(law, SIZES, predict(law, truth, SIZES))
    assert np.abs(predict(law, params, SIZES) - predict(law, truth, SIZES)).max() <= CONVERGED
    beyond = 2 * SIZES.max()
    assert predict(law, params, beyond) == pytest.approx(predict(law, truth, beyond), abs=CONVERGED)


def test_four_parameter_laws_need_five_sizes():
    n = SIZES[:4]
    for law in (POW4, MMF4, WBL4):
        assert FAMILIES[law].min_sizes == 5
        assert fit_law(law, n, predict(law, TRUTHS[law], n)) is None
    curve = fit_curve(synthetic_results(sizes=(10, 20, 40, 80)), "lld", "mlp_pool")
    assert curve.fits[MMF4].describe() == "mmf4: not fitted: needs 5 sizes, has 4"
    assert curve.chosen in (POW3, LOG)


def test_the_backtest_holds_out_the_two_largest_sizes_when_every_law_can_spare_them():
    assert [backtest_depth(m) for m in range(2, 9)] == [1, 1, 1, 2, 1, 2, 2]  # 6 sizes: a 4-parameter law spares 1
    rng = np.random.default_rng(3)
    ua = predict(LOG, TRUTHS[LOG], SIZES) + rng.normal(0, 0.01, len(SIZES))
    without_one, without_two = fit_law(LOG, SIZES[:-1], ua[:-1]), fit_law(LOG, SIZES[:-2], ua[:-2])
    errors = [abs(predict(LOG, without_one, SIZES[-1]) - ua[-1])]
    errors += list(np.abs(predict(LOG, without_two, SIZES[-2:]) - ua[-2:]))
    assert backtest(LOG, SIZES, ua, 2) == pytest.approx(np.mean(errors))


@pytest.mark.parametrize("law", list(TRUTHS))
def test_the_backtest_chooses_a_law_that_predicts_the_held_out_sizes(law):
    results = synthetic_results(sizes=tuple(SIZES.astype(int)), law=lambda n: predict(law, TRUTHS[law], n),
                                noise_sd=0.0, fold_sd=0.0, full=False)  # fmt: skip
    curve = fit_curve(results, "lld", "mlp_pool", n_boot=20)
    assert backtest_depth(len(curve.n)) == 2
    chosen = curve.chosen_fit
    assert chosen.backtest_error <= CONVERGED and not chosen.flags
    refit = fit_law(curve.chosen, curve.n[:-1], curve.ua[:-1])
    # one of the backtest's three held-out predictions, so at most three times their mean
    assert abs(predict(curve.chosen, refit, curve.n[-1]) - curve.ua[-1]) <= 3 * chosen.backtest_error + CONVERGED
    if law != LOG:  # a straight line in ln n cannot follow a curve that bends towards a ceiling: it misses by more
        assert curve.fits[LOG].backtest_error > 100 * CONVERGED and curve.chosen != LOG  # than convergence explains


def test_a_ceiling_forced_onto_its_bound_is_flagged_and_not_extrapolated_from():
    # still rising by 0.07 per unit of ln n at 0.95 UA: a power law would need a ceiling above 1
    results = synthetic_results(sizes=tuple(SIZES.astype(int)), law=lambda n: 0.55 + 0.07 * np.log(n),
                                noise_sd=0.002, fold_sd=0.0)  # fmt: skip
    curve = fit_curve(results, "lld", "mlp_pool")
    power = curve.fits[POW3]
    assert power.params[0] >= 1 - BOUND_TOL
    assert "a on its upper bound 1 (the ceiling)" in power.flags and "on a bound" in power.describe()
    assert curve.chosen == LOG and not curve.chosen_fit.flags
    assert on_bounds(POW3, np.array([0.9, 0.6, 0.5]), 320.0) == []


def test_a_law_on_a_bound_gives_way_to_one_that_predicts_as_well_or_is_chosen_with_a_flag():
    fits = {
        POW3: LawFit(POW3, TRUTHS[POW3], 5, backtest_error=0.010, flags=["a on its upper bound 1 (the ceiling)"]),
        LOG: LawFit(LOG, TRUTHS[LOG], 5, backtest_error=0.012),
    }
    law, reason, flags = choose_law(fits, noise=0.005)  # log's 1.2 points lie within the noise of pow3's 1.0
    assert law == LOG and "predicts as well" in reason and not flags
    law, reason, flags = choose_law(fits, noise=0.001)  # log's lie beyond it
    assert law == POW3 and "chosen despite" in reason and any("chosen despite" in flag for flag in flags)


def test_too_few_sizes_for_a_backtest_fall_back_to_the_log_law_with_a_flag():
    curve = fit_curve(synthetic_results(sizes=(10, 20)), "lld", "mlp_pool")
    assert curve.chosen == LOG and math.isnan(curve.backtest_error)
    assert any("too few sizes for a backtest" in flag for flag in curve.flags)


def test_a_plan_beyond_four_times_the_largest_size_says_so_first_and_names_the_next_size():
    results = synthetic_results(sizes=(10, 20, 40, 80))  # UA = 0.75 - 0.6 n^-0.5: 0.72 needs (0.6 / 0.03)^2 = 400
    result = plan(results, 0.72, "lld", "mlp_pool")
    assert result.per_class > 4 * result.largest_measured and result.beyond_limit
    body = result.statement().split(": ", 1)[1]
    assert body.startswith("more than 4x the largest measured size (80 per class)")
    assert result.next_step == 2 * result.largest_measured and "measure 160 per class next" in body
    within = plan(results, 0.70, "lld", "mlp_pool")  # needs 144, under 4 x 80
    assert not within.beyond_limit and "more than 4x" not in within.statement()


def test_the_plan_intervals_are_at_least_as_wide_as_the_backtest_error():
    # a noiseless Weibull curve at four sizes, too few for a Weibull fit: the bootstrap has nothing to resample,
    # so any width comes from the backtest error of the law that stands in for it
    results = synthetic_results(sizes=(10, 20, 40, 80), law=lambda n: predict(WBL4, TRUTHS[WBL4], n),
                                noise_sd=0.0, fold_sd=0.0)  # fmt: skip
    curve = fit_curve(results, "lld", "mlp_pool")
    result = plan(results, 0.65, "lld", "mlp_pool", curve)
    error = result.backtest_error
    assert error == curve.backtest_error and error > 100 * CONVERGED  # a real miss, not convergence
    boot_low, boot_high = curve.interval([result.next_step])
    assert boot_high[0] - boot_low[0] <= CONVERGED
    expected, low, high = result.ua_next_step
    assert expected - low >= error - CONVERGED and high - expected >= error - CONVERGED
    params = curve.chosen_fit.params
    n_low, n_high = result.per_class_interval
    assert n_low <= solve_n(curve.chosen, params, 0.65 - error) < result.per_class
    assert n_high >= solve_n(curve.chosen, params, 0.65 + error) > result.per_class


def test_the_next_size_s_expected_ua_and_interval_stay_within_0_and_1():
    # a steep logarithmic curve at 0.95 by 80 per class: the law itself passes 1 at the next size, 160
    results = synthetic_results(sizes=(10, 20, 40, 80), law=lambda n: 0.60 + 0.08 * np.log(n), noise_sd=0.002)
    curve = fit_curve(results, "lld", "mlp_pool")
    result = plan(results, 0.85, "lld", "mlp_pool", curve)
    assert curve.predict([result.next_step])[0] > 1  # the case this guards
    expected, low, high = result.ua_next_step
    assert 0 <= low <= expected <= high <= 1
    assert any("passes 100% UA by 160 per class" in note for note in result.notes)


def test_plan_lines_show_the_backtest_and_read_the_cost_as_a_sentence():
    result = plan(synthetic_results(sizes=(10, 20, 40, 80)), 0.70, "lld", "mlp_pool")  # 144 per class, beyond 80
    lines = plan_lines(result, Costs(seconds_per_label=20, cost_per_hour=30))
    assert any(line.startswith(f"backtest error of the {result.law} law: ") for line in lines)
    cost = next(line for line in lines if "annotator hours" in line)
    assert " annotator hours and cost " in cost and cost.endswith(" at 30 per hour")
    beyond = plan(synthetic_results(sizes=(10, 20, 40, 80)), 0.72, "lld", "mlp_pool")  # 400 per class, beyond 4 x 80
    round_line = next(line for line in plan_lines(beyond, Costs(20, 30)) if line.startswith("the next round"))
    assert round_line.startswith("the next round, up to 160 per class: 320 labels take ")  # 80 more for each of 4


def test_a_target_far_beyond_the_measured_sizes_gets_a_plain_statement_not_a_count():
    results = synthetic_results(law=lambda n: 0.30 + 0.06 * np.log(n), noise_sd=0.002, fold_sd=0.002)
    result = plan(results, 0.80, "lld", "mlp_pool")  # the log law reaches 0.80 at n = e^8.3, about 4,200 per class
    assert result.per_class > 10 * result.largest_measured
    statement = result.statement()
    assert "too far for any count to be trusted" in statement and "640 per class next" in statement
    assert str(math.ceil(result.per_class)) not in statement


@pytest.mark.parametrize("target", [0.5, 0.65])
def test_a_flat_curve_gets_a_plan_and_a_report_not_an_overflow(target, tmp_path):
    """Three sizes of a curve that does not rise (a short budget): plan and report answer in words."""
    from budget.report import build_report

    results = synthetic_results(law=lambda n: 0.45 + 0 * n, sizes=(4, 8, 16), noise_sd=0.01, fold_sd=0.01)
    statement = plan(results, target, "lld", "mlp_pool").statement()
    assert statement and "e+" not in statement
    run = tmp_path / "run"
    run.mkdir()
    stored(results).to_parquet(run / "results.parquet")
    (run / "config.json").write_text("{}")
    (run / "provenance.json").write_text("{}")
    html = build_report(run, tmp_path / "report", target=target)
    assert html.is_file() and (tmp_path / "report" / "report.md").is_file()


def test_the_labels_needed_ladder_says_how_each_answer_is_known():
    """UA = 0.30 + 0.06 ln n: 0.60 needs e^5 = 148 per class (measured up to 320), 0.70 e^6.7 = 786 (2.5x),
    0.75 e^7.5 = 1808 (5.6x), 0.80 and 0.85 more than 10x: no count."""
    from budget.analysis import labels_needed, target_ladder

    results = synthetic_results(law=lambda n: 0.30 + 0.06 * np.log(n), noise_sd=0.002, fold_sd=0.002)
    curve = fit_curve(results, "lld", "mlp_pool")
    assert curve.chosen == LOG
    ladder = target_ladder(aggregate(results), [curve], target=0.60)
    assert ladder == [0.6, 0.7, 0.75, 0.8, 0.85]  # the target, then every 5 points above the best measured 0.688
    needed = labels_needed(results, [curve], ladder).set_index("target")
    assert list(needed["status"]) == ["interpolated", "extrapolated", "extrapolated", "too far", "too far"]
    for target, expected in ((0.60, math.exp(5)), (0.70, math.exp(0.4 / 0.06)), (0.75, math.exp(7.5))):
        row = needed.loc[target]
        assert row["low"] <= expected <= row["high"] and row["per_class"] == pytest.approx(expected, rel=0.1)
        assert row["total"] == 4 * row["per_class"]
    assert needed.loc[0.80, ["per_class", "total"]].isna().all() and needed.loc[0.80, "next_size"] == 640


def test_the_recommendation_names_the_cheapest_configuration_and_the_runner_up():
    from budget.analysis import labels_needed, recommend

    results = pd.concat([synthetic_results(law=lambda n: 0.30 + 0.06 * np.log(n), noise_sd=0.002, fold_sd=0.002),
                         synthetic_results(law=lambda n: 0.36 + 0.06 * np.log(n), noise_sd=0.002, fold_sd=0.002,
                                           features="hf:/m/whisper")])  # fmt: skip
    curves = [fit_curve(results, f, "mlp_pool") for f in ("lld", "hf:/m/whisper")]
    table = aggregate(results)
    sentence = recommend(table, labels_needed(results, curves, [0.65]), target=0.65)
    # whisper needs e^(0.29/0.06) = 126 per class, LLDs e^(0.35/0.06) = 342: 2.7 times as many
    assert sentence.startswith("Recommended for UA 0.65: whisper + mlp_pool, about 1")
    assert "the next best, lld + mlp_pool" in sentence and "2.7 times as many labels" in sentence
    assert recommend(table, labels_needed(results, curves, [0.99]), target=0.99).startswith("No configuration reaches")
    assert recommend(table, pd.DataFrame()).startswith("Recommended: whisper + mlp_pool, UA 0.7")


def test_a_curve_without_a_ceiling_keeps_the_ladder_open_beside_one_at_its_ceiling():
    from budget.analysis import target_ladder

    flat = synthetic_results()  # pow3 with ceiling 0.75, measured up to about 0.74
    rising = synthetic_results(law=lambda n: 0.30 + 0.06 * np.log(n), noise_sd=0.002, fold_sd=0.002, features="hf:/m/w")
    results = pd.concat([flat, rising])
    curves = [fit_curve(results, f, "mlp_pool") for f in ("lld", "hf:/m/w")]
    assert [c.chosen for c in curves] == [POW3, LOG]
    assert target_ladder(aggregate(results), curves) == [0.75, 0.8, 0.85, 0.9]  # from above the best 0.74, up to 0.74 + 0.2


def _paired_configurations(gain: float, seed: int, folds: int = 10, seeds: int = 3, fold_sd: float = 0.04,
                           run_sd: float = 0.01, interaction_sd: float = 0.015) -> pd.DataFrame:  # fmt: skip
    """Two heads on one feature set at one size: shared fold effects, the second ``gain`` above the first on average,
    by an amount that varies with the held-out fold (a head suits some speakers better), plus each run's own noise."""
    base = synthetic_results(sizes=(20,), folds=folds, seeds=seeds, fold_sd=fold_sd, noise_sd=run_sd, seed=seed, full=False)
    rng = np.random.default_rng(seed + 1000)
    by_fold = rng.normal(0, interaction_sd, folds)[base["fold"].to_numpy()]
    other = base.assign(head="attn_pool", ua=base["ua"] + gain + by_fold + rng.normal(0, run_sd, len(base)),
                        train_seconds=base["train_seconds"] * 50)  # fmt: skip
    return pd.concat([base, other], ignore_index=True)


def test_the_paired_interval_covers_the_true_difference_at_its_nominal_rate():
    from budget.analysis import paired_difference

    hits, trials = 0, 200
    for trial in range(trials):
        results = _paired_configurations(0.01, seed=trial)
        difference = paired_difference(results, ("lld", "attn_pool"), ("lld", "mlp_pool"), Size(20), np.random.default_rng(trial))
        hits += difference.low <= 1.0 <= difference.high  # points
    assert 0.90 <= hits / trials <= 0.99


def test_configurations_that_differ_by_noise_alone_are_not_distinguishable_and_the_cheaper_is_recommended():
    from budget.analysis import measured_costs, paired_difference, recommend

    results = _paired_configurations(0.0, seed=4)
    difference = paired_difference(results, ("lld", "attn_pool"), ("lld", "mlp_pool"), Size(20))
    assert not difference.distinguishable and difference.runs == 30
    table = aggregate(results)
    costs = measured_costs(results, {"lld": 0.002})
    ranked = table.sort_values("mean", ascending=False)
    assert ranked.iloc[0]["head"] == "attn_pool"  # the higher mean, by noise, is the dearer head
    sentence = recommend(table, pd.DataFrame(), results=results, costs=costs)
    assert sentence.startswith("Recommended: lld + mlp_pool, UA")
    assert "a configuration not distinguishable from the highest mean there, lld + attn_pool's" in sentence
    assert "and the cheapest of them: 2 ms of extraction and " in sentence and "of training per utterance, against" in sentence


def test_a_real_difference_is_recommended_with_its_paired_interval():
    from budget.analysis import measured_costs, recommend

    results = _paired_configurations(0.03, seed=5)
    table = aggregate(results)
    sentence = recommend(table, pd.DataFrame(), results=results, costs=measured_costs(results))
    assert sentence.startswith("Recommended: lld + attn_pool, UA")
    interval = re.search(r"reaches [0-9.]+ there \(lld \+ attn_pool minus lld \+ mlp_pool: \+([0-9.]+) points "
                         r"\(95% CI \+([0-9.]+) to \+([0-9.]+)\), higher in (\d+) of 30", sentence)
    assert interval, sentence
    gain, low, high, wins = (float(g) for g in interval.groups())
    assert low < 3.0 < high and 0 < low and wins >= 25
    assert "not distinguishable" not in sentence
