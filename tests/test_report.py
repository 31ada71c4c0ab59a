"""Reports, plots and the plan command, built from small synthetic results tables."""

from __future__ import annotations

import pandas as pd
import pytest
from analysis_helpers import synthetic_results, write_run
from typer.testing import CliRunner

from budget.cli import app
from budget.errors import BudgetError
from budget.report import Costs, build_report
from budget.results import stored
from budget.runfolder import FinishedStudy

runner = CliRunner()


@pytest.fixture
def run_folder(tmp_path):
    return write_run(tmp_path / "runs" / "curve-emodb-test")


def test_report_has_every_section_and_embedded_figures(run_folder, tmp_path):
    path = build_report(run_folder, tmp_path / "report", target=0.70, costs=Costs(20, 30))  # lld: 144 per class
    markdown = (tmp_path / "report" / "report.md").read_text()
    for section in ("## What was run", "## Labels needed", "## Unweighted accuracy", "## Fitted learning curves",
                    "## Plan for UA 0.70", "## Provenance"):  # fmt: skip
        assert section in markdown
    assert markdown.index("## Labels needed") < markdown.index("## Unweighted accuracy")  # the answer comes first
    assert "Recommended for UA 0.70: whisper + mlp_pool" in markdown and "| UA 70% |" in markdown
    assert "labels per class" in markdown and "annotator hours" in markdown
    gains = markdown[markdown.index("## Gain over") :].split("\n## ")[0]  # whisper = lld + 5 points in every run
    assert gains.count("| +5.0 |") == 5 and "whisper" in gains
    figures = sorted(p.name for p in (tmp_path / "report" / "figures").glob("*.png"))
    assert "curve.png" in figures and "compare.png" not in figures  # one head: the bars would repeat the curve
    assert "recall.png" in figures and any(name.startswith("confusion-") for name in figures)
    assert all((tmp_path / "report" / "figures" / name).stat().st_size > 5_000 for name in figures)
    curve = (tmp_path / "report" / "figures" / "curve.svg").read_text()  # text stays text (svg.fonttype none)
    assert "chance (4 classes)" in curve and "target UA 70%" in curve and "UA, %" in curve
    assert curve.count("fitted law; dashed: extrapolated") == 1
    assert curve.count(">mlp_pool<") == 1 and ">lld<" in curve and ">whisper<" in curve  # a panel per feature set, one legend
    assert "## Paired comparisons at 80 per class" in markdown
    page = path.read_text()
    assert page.count("data:image/png;base64,") == markdown.count("![")
    assert "figures/" not in page  # self-contained


def test_an_extrapolated_law_is_drawn_as_far_as_a_plan_looks_and_never_above_its_ceiling_or_100_percent():
    import matplotlib.pyplot as plt
    import numpy as np

    from budget.analysis import aggregate, fit_curve
    from budget.analysis.laws import EXTRAPOLATION_LIMIT
    from budget.plots import _fitted_line

    rising = synthetic_results(law=lambda n: 0.30 + 0.12 * np.log(n), noise_sd=0.002, fold_sd=0.002)  # past 100% at 340
    fit = fit_curve(rising, "lld", "mlp_pool")
    summary = aggregate(rising)
    measured = summary[[size.balanced for size in summary["size"]]]["n_per_class"]
    figure, axis = plt.subplots()
    _fitted_line(axis, fit, measured, "k", target=None, extrapolate_to=None)
    xs = np.concatenate([line.get_xdata() for line in axis.lines])
    ys = np.concatenate([line.get_ydata() for line in axis.lines])
    plt.close(figure)
    assert fit.chosen == "log" and ys.max() <= 1.0 and xs.max() <= EXTRAPOLATION_LIMIT * measured.max() * (1 + 1e-9)
    assert fit.predict(np.array([EXTRAPOLATION_LIMIT * measured.max()]))[0] > 1.0  # the law itself would pass 100%


def test_a_report_on_few_folds_says_its_intervals_are_wide_for_that_reason(run_folder, tmp_path):
    build_report(run_folder, tmp_path / "few")  # the fixture's study has 4 folds
    assert "only 4 held-out folds, so every interval is wide" in (tmp_path / "few" / "report.md").read_text()
    results = pd.read_parquet(run_folder / "results.parquet")
    more = pd.concat([results, results.assign(fold=results["fold"] + 4)], ignore_index=True)  # 8 folds
    stored(more).to_parquet(run_folder / "results.parquet")
    build_report(run_folder, tmp_path / "many")
    assert "held-out folds, so every interval is wide" not in (tmp_path / "many" / "report.md").read_text()


def test_missing_results_is_a_clear_error(tmp_path):
    with pytest.raises(BudgetError, match="no results.parquet"):
        FinishedStudy.open(tmp_path)


def test_plan_command(run_folder):
    result = runner.invoke(app, ["plan", "--target", "0.70", str(run_folder), "--features", "lld",
                                 "--seconds-per-label", "30", "--cost-per-hour", "25"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "lld + mlp_pool:" in result.output and "labels per class" in result.output
    assert "annotator hours" in result.output and "classes that most need labels" in result.output
    unreachable = runner.invoke(app, ["plan", "--target", "0.9", str(run_folder), "--features", "lld"])
    assert "fitted ceiling" in unreachable.output and "below the target 0.900" in unreachable.output


@pytest.mark.parametrize(("option", "message"), [
    (("--seconds-per-label", "-5"), "seconds per label must be a number of at least 0; got -5.0"),
    (("--cost-per-hour", "nan"), "cost per hour must be a finite number of at least 0; got nan"),
])  # fmt: skip
def test_plan_refuses_negative_or_non_finite_costs_in_one_line(run_folder, option, message):
    """'104 labels take -0.1 annotator hours and cost nan at nan per hour' was printed for these."""
    result = runner.invoke(app, ["plan", "--target", "0.70", str(run_folder), "--features", "lld", *option])
    assert result.exit_code == 2 and result.output.strip() == f"error: {message}"


def test_report_command_defaults_to_the_latest_run(run_folder, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["report"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "reports" / "curve-emodb-test" / "report.html").is_file()


def test_the_study_log_and_the_report_say_how_each_head_trained_in_one_voice():
    from budget.engine.config import TrainConfig
    from budget.registry import describe_training

    heads = ["mean_pool", "attn_pool", "mlp_pool", "logreg"]
    recorded = TrainConfig.recorded({"steps": 2000, "max_epochs": 0, "lr": 0.001, "batch_size": 16, "dropout": 0.2,
                                     "l2_c": 1.0, "a_key_of_an_older_version": 1})  # fmt: skip
    text = describe_training(recorded, heads)
    assert "mean_pool: L2-penalised (C = 1) on standardised inputs" in text
    assert "attn_pool: L2-penalised (C = 1; attention's frame score 3 x width" in text
    assert "mlp_pool: Adam, 2000 optimiser steps for every run" in text and "logreg: scikit-learn" in text
    assert "products in" not in text  # run folders from before the products were decided say nothing
    with_products = describe_training(TrainConfig(steps=2000, max_epochs=0, dropout=0.2, bf16=True), heads)
    assert "dropout 0.2, products in bf16 autocast" in with_products
    by_passes = describe_training(TrainConfig(steps=3000, max_epochs=150, train_frames=8), heads)
    assert "mlp_pool: Adam, 150 passes over its subset, from 750 to 3000 optimiser steps" in by_passes
    assert "for every run" not in by_passes and "reading 8 evenly spaced frames" in by_passes
    # the bimodal model reads every frame whatever train_frames says
    assert "frames of each utterance" not in describe_training(TrainConfig(train_frames=8), ["align_lstm"])
    assert describe_training(recorded, ["mean_pool", "meanmax_pool"]).startswith("mean_pool, meanmax_pool: L2")


def test_the_report_names_the_folds_that_lack_a_class_and_says_how_ua_treats_them(run_folder, tmp_path):
    results = pd.read_parquet(run_folder / "results.parquet")
    lacking = results["fold"] == results["fold"].max()
    results.loc[lacking, "recall_angry"] = float("nan")  # as run_metrics writes a class the test fold lacks
    results.loc[lacking, "fold_name"] = "08"
    stored(results).to_parquet(run_folder / "results.parquet")
    build_report(run_folder, tmp_path / "report")
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "over the classes the fold holds" in markdown and "(here 08 has no angry)" in markdown
