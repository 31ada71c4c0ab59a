"""Studies: the grid, the speaker-independent protocol, resume, configs, and the curve/compare commands."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from corpus_builders import build_iemocap
from typer.testing import CliRunner

import budget.engine.cost as engine_cost
import budget.engine.device as engine_device
from budget import grid
from budget.analysis import convergence_table
from budget.cli import app
from budget.engine.config import TrainConfig
from budget.errors import BudgetError
from budget.registry import train as train_head
from budget.results import read_stored
from budget.sampling import FULL, Size
from budget.study import Study, StudyConfig

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def iemocap(tmp_path_factory) -> Path:
    return build_iemocap(tmp_path_factory.mktemp("iemocap"))


def config_for(root: Path, tmp_path: Path, **overrides) -> StudyConfig:
    settings = dict(
        corpus="iemocap", root=str(root), features=("lld",), heads=("mean_pool",), per_class=(1, 2),
        seeds=2, store=str(tmp_path / "store"), train=TrainConfig(steps=20, lr=1e-2, batch_size=4, device="cpu"),
    )  # fmt: skip
    settings.update(overrides)
    return StudyConfig(**settings)


def test_grid_and_speaker_independence(iemocap, tmp_path, monkeypatch):
    seen = []

    def spy(head, inputs, labels, runs, n_classes, config, **kwargs):
        seen.append((inputs["single"], runs))
        return train_head(head, inputs, labels, runs, n_classes, config, **kwargs)

    config = config_for(iemocap, tmp_path, heads=("mean_pool", "logreg"))
    results = Study(config, tmp_path / "run", trainer=spy).run(log=lambda _: None)
    # 2 heads x 2 sizes x 5 folds x 2 seeds
    assert len(results) == 40
    assert set(results["size"]) == {1, 2} and set(results["head"]) == {"mean_pool", "logreg"}
    assert results.groupby(["head", "size"]).size().eq(10).all()
    for features, runs in seen:
        for run in runs:
            sessions_train = {u[:5] for u in features.utt_ids[run.train]}
            sessions_test = {u[:5] for u in features.utt_ids[run.test]}
            assert len(sessions_test) == 1 and not sessions_train & sessions_test
            assert len(run.train) == 4 * run.size.per_class
    assert {"ua", "wa", "macro_f1", "recall_neutral", "confusion", "fold_name"} <= set(results.columns)
    assert (tmp_path / "run" / "results.csv").is_file() and (tmp_path / "run" / "provenance.json").is_file()
    provenance = (tmp_path / "run" / "provenance.json").read_text()
    assert '"manifest_sha256"' in provenance and '"torch"' in provenance
    recorded = json.loads((tmp_path / "run" / "config.json").read_text())["train"]
    assert isinstance(recorded["bf16"], bool)  # the products decided, recorded once with the settings


def test_interrupted_study_resumes_and_matches_an_uninterrupted_one(iemocap, tmp_path, monkeypatch):
    config = config_for(iemocap, tmp_path, heads=("mean_pool", "attn_pool"))
    reference = Study(config, tmp_path / "reference").run(log=lambda _: None)

    calls = []

    def crash_on_second(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return train_head(*args, **kwargs)

    with pytest.raises(KeyboardInterrupt):
        Study(config, tmp_path / "resumed", trainer=crash_on_second).run(log=lambda _: None)
    assert len(Study(config, tmp_path / "resumed").finished()) == 20  # mean_pool's 20 runs (2 sizes) survived

    calls.clear()
    counting = lambda *a, **k: (calls.append(a[0]), train_head(*a, **k))[1]  # noqa: E731
    resumed = Study(config, tmp_path / "resumed", trainer=counting).run(log=lambda _: None)
    assert calls == ["attn_pool"]  # only the unfinished head
    key = ["features", "head", "size", "fold", "seed"]
    pd.testing.assert_frame_equal(
        resumed.sort_values(key).drop(columns=["train_seconds", "estimated_seconds"]).reset_index(drop=True),
        reference.sort_values(key).drop(columns=["train_seconds", "estimated_seconds"]).reset_index(drop=True),
    )


def test_the_estimate_prices_every_size_of_a_head_whose_cost_grows_with_it(iemocap, tmp_path, monkeypatch):
    """A fitted run costs more the more examples it fits (more rows, more iterations): the printed estimate, from
    probes at a job's smallest and largest size, prices each size, where a probe at the smallest alone would not."""
    def synthetic_cost(head, inputs, labels, runs, *args, **kwargs) -> float:
        assert len({run.size for run in runs}) == 1  # each probe times runs of one size
        return 0.5 * sum(len(run.train) for run in runs) / len(runs)  # seconds per fit: grows with the subset

    monkeypatch.setattr(engine_cost, "measure_unit_seconds", synthetic_cost)
    said = []
    config = config_for(iemocap, tmp_path, per_class=(1, 2, "full"), workers=1)  # priced work, trained in turn
    results = Study(config, tmp_path / "run").run(log=said.append)
    expected = 0.5 * results["n_train"].sum()
    smallest_only = 0.5 * results["n_train"].min() * len(results)
    (line,) = [line for line in said if line.startswith("estimated training time")]
    printed = float(re.search(r"time: ([0-9.]+) min", line).group(1)) * 60
    assert abs(printed - expected) <= 30 and smallest_only < 0.5 * expected  # printed to the minute
    assert results["estimated_seconds"].sum() == pytest.approx(expected)  # each run keeps its price beside its time


def test_the_cost_model_probes_full_on_every_fold_s_runs_not_on_the_largest_fold_alone():
    """``full`` holds a different number of examples in each fold: probed on the runs of the largest fold only, a
    stepped head was timed on an ensemble of a few runs, whose fixed cost per step a study's chunks share over
    dozens (the main job's estimate came out 43% high)."""
    def run(size, n, fold):
        return grid.Run(fold, 0, size, np.arange(n), np.arange(1))

    runs = [run(4, 28, fold) for fold in range(10) for _ in range(3)]
    runs += [run(FULL, 420 + fold, fold) for fold in range(10) for _ in range(3)]
    model = engine_cost.CostModel.probed(lambda sample: 1.0 + 10.0 / len(sample), runs)  # a chunk's overhead, shared
    assert model.unit_seconds(28) == pytest.approx(1 + 10 / 30)
    assert model.unit_seconds(424.5) == pytest.approx(1 + 10 / 30)


def test_a_run_folder_holds_one_configuration(iemocap, tmp_path):
    Study(config_for(iemocap, tmp_path, per_class=(1,)), tmp_path / "run").run(log=lambda _: None)
    with pytest.raises(BudgetError, match="holds a study with other settings"):
        Study(config_for(iemocap, tmp_path, per_class=(2,)), tmp_path / "run").run(log=lambda _: None)


def test_the_product_precision_is_a_setting_of_the_folder_and_a_resumed_study_keeps_it(iemocap, tmp_path, monkeypatch):
    config = config_for(iemocap, tmp_path, heads=("mlp_pool",), per_class=(1,), seeds=1)
    monkeypatch.setattr(engine_device, "cpu_has_fast_bf16", lambda: True)
    fast = config.digest()
    first = Study(config, tmp_path / "run").run(log=lambda _: None)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["train"]["bf16"] is True
    monkeypatch.setattr(engine_device, "cpu_has_fast_bf16", lambda: False)  # the same study on a CPU without fast bf16
    assert config.digest() != fast  # a new study there gets a folder of its own
    resumed = Study(config, tmp_path / "run")
    assert resumed.config.train.bf16 is True  # the folder's study keeps the products it started with
    lines = []
    pd.testing.assert_frame_equal(resumed.run(log=lines.append), first)
    assert any("started with bf16 autocast products and keeps them" in line for line in lines)
    assert Study(config, tmp_path / "other").config.train.bf16 is False


def test_the_same_study_beside_a_cpu_burner_gives_identical_results_for_every_head(iemocap, tmp_path):
    """The load of the machine decides nothing: not the products, not a chunk, not a run's numbers."""
    import multiprocessing

    heads = ("mean_pool", "meanmax_pool", "attn_pool", "mlp_pool", "logreg")
    config = config_for(iemocap, tmp_path, heads=heads, per_class=(1,), seeds=1)
    quiet = Study(config, tmp_path / "quiet").run(log=lambda _: None)
    burners = [multiprocessing.get_context("fork").Process(target=_burn, daemon=True) for _ in range(1)]
    for burner in burners:
        burner.start()
    try:
        loaded = Study(config, tmp_path / "loaded").run(log=lambda _: None)
    finally:
        for burner in burners:
            burner.kill()
    measured = [c for c in quiet.columns if c not in ("train_seconds", "estimated_seconds")]
    pd.testing.assert_frame_equal(quiet[measured], loaded[measured])
    assert len(quiet) == 5 * 5 and "confusion" in measured


def _burn() -> None:
    while True:
        pass


def test_sizes_no_fold_can_supply_are_an_error(iemocap, tmp_path):
    with pytest.raises(BudgetError, match="no requested size can be supplied by every fold: 50 per class"):
        Study(config_for(iemocap, tmp_path, per_class=(50,)), tmp_path / "run").run(log=lambda _: None)


def test_results_are_ordered_as_configured_with_sizes_numerically():
    from budget.results import sort_results

    table = pd.DataFrame({"features": ["b", "a", "b", "b", "a"], "head": "h", "size": [FULL, *map(Size, (10, 2, 10, 2))],
                          "fold": [0, 1, 0, 1, 0], "seed": 0})  # fmt: skip
    ordered = sort_results(table, {"features": ["b", "a"]})
    assert list(zip(ordered["features"], ordered["size"], strict=True)) == [
        ("b", 2), ("b", 10), ("b", FULL), ("a", 2), ("a", 10)]  # fmt: skip
    assert list(sort_results(table)["features"][:1]) == ["b"]  # unlisted: in order of first appearance


@pytest.mark.parametrize("path", sorted((REPO / "experiments").glob("*.toml")), ids=lambda p: p.name)
def test_shipped_configs_parse(path):
    from budget.study import AcquisitionConfig

    config = (AcquisitionConfig if "# budget acquire" in path.read_text() else StudyConfig).from_toml(path)
    assert config.features and config.heads  # the shipped designs name their heads
    assert (config.per_class is None) != (config.n is None) or (config.per_class is None and config.n is None)


def test_config_errors():
    with pytest.raises(BudgetError, match="unknown study setting"):
        StudyConfig().with_overrides(epoch=3)
    with pytest.raises(BudgetError, match="unknown model 'svm'"):
        StudyConfig().with_overrides(heads="svm")
    assert StudyConfig().with_overrides(per_class="5,10,full").per_class == (5, 10, FULL)
    assert StudyConfig(per_class=(5, "10")).per_class == StudyConfig(per_class="5,10").per_class == (Size(5), Size(10))
    assert StudyConfig().with_overrides(epochs=7).train.epochs == 7


runner = CliRunner()


def test_curve_and_compare_commands(iemocap, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # reports/ goes here
    common = ["--corpus", "iemocap", "--root", str(iemocap), "--features", "lld", "--store", str(tmp_path / "store"),
              "--seeds", "1", "--steps", "20", "--lr", "0.01", "--device", "cpu"]  # fmt: skip
    result = runner.invoke(app, ["curve", "--model", "mlp_pool", "--per-class", "1,2,full", *common,
                                 "--run-dir", str(tmp_path / "curve"), "--check-every-size"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert set(read_stored(pd.read_parquet(tmp_path / "curve" / "convergence.parquet"))["size"]) == {1, 2, FULL}
    rows = [line for line in result.output.splitlines() if "mlp_pool" in line and line.startswith("│")]
    assert [re.search(r"│\s*mlp_pool\s*│\s*(\S+)", r).group(1) for r in rows] == ["1", "2", "full"]
    assert "results: " in result.output
    assert (tmp_path / "reports" / "curve" / "report.html").is_file()

    result = runner.invoke(app, ["compare", "--n", "8", "--models", "mean_pool,logreg", *common,
                                 "--run-dir", str(tmp_path / "compare"), "--identity", "stat"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "UA at 2 per class (8 training examples)" in result.output
    assert "against the best, paired by fold and seed" in result.output and "Recommended: lld + " in result.output
    assert re.search(r"higher in \d+ of 5", result.output)
    results = pd.read_parquet(tmp_path / "compare" / "results.parquet")
    assert len(results) == 2 * 5 and set(results["per_class"]) == {2} and not results["full"].any()  # stored typed
    from budget.features import FeatureStore

    known = FeatureStore(tmp_path / "store").summary()  # curve knew files by content (the default), compare by stat
    assert sorted(known["identity"]) == ["content", "stat"]
    refused = runner.invoke(app, ["compare", "--n", "8", *common, "--identity", "name"])
    assert refused.exit_code == 2 and refused.output.startswith("error: file_identity must be one of content, stat")


def test_default_encoder_without_internet_is_one_clear_line(iemocap, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = runner.invoke(app, ["curve", "--corpus", "iemocap", "--root", str(iemocap), "--device", "cpu",
                                 "--run-dir", str(tmp_path / "run")])  # fmt: skip
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip() and not line.startswith("study folder")]
    assert len(lines) == 1 and "microsoft/wavlm-base-plus" in lines[0] and "hf:/path/to/model" in lines[0]


def test_compare_needs_one_size(iemocap, tmp_path):
    result = runner.invoke(app, ["compare", "--n", "8,16", "--corpus", "iemocap", "--root", str(iemocap), "--features", "lld"])
    assert result.exit_code == 2 and "compare runs one size" in result.output


@pytest.mark.parametrize("head", ["logreg", "mean_pool"])
def test_one_class_is_one_error_line_before_any_folder(iemocap, tmp_path, head):
    result = CliRunner().invoke(app, ["curve", "--corpus", "iemocap", "--root", str(iemocap), "-f", "lld", "-m", head,
                                      "--classes", "neutral", "--per-class", "1", "--store", str(tmp_path / "store"),
                                      "--run-dir", str(tmp_path / "run")])  # fmt: skip
    assert result.exit_code == 2 and result.output.strip().splitlines() == [
        "error: a study needs at least two classes; the corpus with --classes holds 1 (neutral)"], result.output
    assert not (tmp_path / "run").exists() and not (tmp_path / "store").exists()


def test_strict_stops_on_bad_audio(tmp_path):
    root = build_iemocap(tmp_path / "iemocap", sessions=2)
    next((root / "Session1" / "sentences" / "wav").rglob("*.wav")).write_bytes(b"")
    config = config_for(root, tmp_path, per_class=(1,))
    with pytest.raises(BudgetError, match="1 bad audio file"):
        Study(config, tmp_path / "run").run(log=lambda _: None, strict=True)


def classes_learned(rates: dict) -> Callable:
    """A trainer whose runs of a size get ``steps * rate`` of the classes right (every class from ``4 / rate``
    steps), ``rate`` by size (key None: full): a head whose UA rises with its budget until the budget is enough, the
    same on every fold."""
    def train(head, inputs, labels, runs, n_classes, config, advance=None, **kwargs):
        predictions = []
        for run in runs:
            right = min(n_classes, int(config.steps * config.cycles * rates[run.size.per_class]))
            truth = labels[run.test]
            predictions.append(np.where(truth < right, truth, (truth + 1) % n_classes))
        if advance:
            advance(config.steps * config.cycles)
        return predictions

    return train


def test_the_convergence_check_trains_each_cell_still_learning_again_until_a_doubling_no_longer_moves_it(
        iemocap, tmp_path, monkeypatch, capsys):  # fmt: skip
    """A cell that a doubling moves trains again at twice that budget, up to the cap; the results hold each cell at
    the first budget whose doubling no longer moved it, and a cell still moving at the cap at the cap."""
    from budget.analysis import cell_budgets
    from budget.runfolder import FinishedStudy

    probes = []
    monkeypatch.setattr(engine_cost, "measure_unit_seconds", lambda *args, **kwargs: probes.append(1) or 1e-3)
    # classes right at 1x, 2x, 4x and 8x: size 1: 4 4 4 4; size 2: 0 1 2 4; size 3: 2 4 4 4; full: 1 2 4 4
    learner = classes_learned({1: 4, 2: 0.5, 3: 2, None: 1})
    config = config_for(iemocap, tmp_path, heads=("mlp_pool",), per_class=(1, 2, 3, "full"),
                        train=TrainConfig(steps=1, lr=1e-3, batch_size=4, device="cpu"))  # fmt: skip
    said = []
    results = Study(config, tmp_path / "run", trainer=learner).run(log=said.append, check_convergence="all")
    finished = FinishedStudy.open(tmp_path / "run")
    table = convergence_table(finished.results, finished.convergence)
    doublings = {int(s.per_class or 0): list(zip(g["budget"], g["flagged"], strict=True)) for s, g in table.groupby("size")}
    assert doublings == {1: [(1, False)], 2: [(1, True), (2, True), (4, True)], 3: [(1, True), (2, False)],
                         0: [(1, True), (2, True), (4, False)]}  # fmt: skip
    budgets = cell_budgets(table)
    assert budgets["budget"].tolist() == [1, 8, 2, 4] and budgets["converged"].tolist() == [True, False, True, True]
    by_size = results.groupby("size")[["budget", "steps"]].agg(set)
    assert by_size["budget"].tolist() == [{1}, {8}, {2}, {4}] == by_size["steps"].tolist()  # one step per budget
    assert (results["ua"] == 1.0).all()  # each cell at the budget it needed, not the first pass's
    assert [line for line in said if "train on to" in line] == [
        "convergence check: 3 cell(s) moved by doubling 1x the budget to 2x; they train on to 4x",
        "convergence check: 2 cell(s) moved by doubling 2x the budget to 4x; they train on to 8x"]
    assert any(re.fullmatch(r"training took .+; estimated .+", line) for line in said)
    assert len(probes) == 2  # the job's smallest and largest size, once: the 4x and 8x passes are priced by them
    from budget.api import load
    from budget.cli.studies import _print_unconverged

    capsys.readouterr()
    _print_unconverged(load(tmp_path / "run"))
    printed = " ".join(capsys.readouterr().err.split())
    assert "2 cell(s) needed more than the study's budget and are shown at it: lld + mlp_pool at 3 (2x), lld + " \
           "mlp_pool at full (4x)" in printed
    assert re.search(r"not converged at 8x the budget: lld \+ mlp_pool at 2 per class moves \+50\.0 ± 0\.0 UA points "
                     r"from 4x to 8x", printed), printed
    from budget.report import build_report

    report = (build_report(tmp_path / "run", tmp_path / "report").parent / "report.md").read_text()
    assert "trained longer to converge: lld + mlp_pool at 2 at 8x the budget, lld + mlp_pool at 3 at 2x the budget, " \
           "lld + mlp_pool at full at 4x the budget" in report
    assert "lld + mlp_pool at 2 per class: not converged at 8x, the cap" in report
    assert "lld + mlp_pool at full per class: converged at 4x the budget" in report


def test_the_check_trains_on_from_the_first_pass_and_after_a_restart_from_the_start(iemocap, tmp_path, monkeypatch):
    """The check's 2x runs of mlp_pool go on from the weights the first pass ended at, and 4x from 2x; a check run by
    a later process, which holds none, trains both cycles.  Either way a 2x row records twice the steps."""
    import budget.engine.runs as engine_runs

    monkeypatch.setattr(engine_cost, "measure_unit_seconds", lambda *args, **kwargs: 1e-3)
    calls = []
    real = engine_runs.train_ensemble

    def spy(head, inputs, labels, runs, n_classes, config, *args, **kwargs):
        calls.append((config.cycles, frozenset(run.start.cycles if run.start else 0 for run in runs)))
        return real(head, inputs, labels, runs, n_classes, config, *args, **kwargs)

    monkeypatch.setattr(engine_runs, "train_ensemble", spy)
    config = config_for(iemocap, tmp_path, heads=("mlp_pool",), per_class=(1, 2, 3),
                        train=TrainConfig(steps=8, max_epochs=0, lr=1e-2, batch_size=4, device="cpu"))  # fmt: skip
    first = Study(config, tmp_path / "on").run(log=lambda _: None, check_convergence="ends")
    assert {starts for cycles, starts in calls if cycles == 1} == {frozenset({0})}
    assert {(cycles, starts) for cycles, starts in calls if cycles > 1} >= {(2, frozenset({1})), (4, frozenset({2}))}
    assert all(starts == {cycles // 2} for cycles, starts in calls if cycles > 1)  # each rung from the one below
    checked = FinishedStudyOpen(tmp_path / "on").convergence
    assert set(checked.loc[checked["budget"] == 2, "steps"]) == {16}
    calls.clear()
    Study(config, tmp_path / "restarted").run(log=lambda _: None, check_convergence="none")
    Study(config, tmp_path / "restarted").run(log=lambda _: None, check_convergence="ends")
    assert {call for call in calls if call[0] == 2} == {(2, frozenset({0}))}
    again = FinishedStudyOpen(tmp_path / "restarted").convergence
    assert set(again.loc[again["budget"] == 2, "steps"]) == {16}
    assert len(first) == 30


def FinishedStudyOpen(folder):
    from budget.runfolder import FinishedStudy

    return FinishedStudy.open(folder)


def test_a_study_resumes_its_escalated_cells_without_training(iemocap, tmp_path, monkeypatch):
    monkeypatch.setattr(engine_cost, "measure_unit_seconds", lambda *args, **kwargs: 1e-3)
    learner = classes_learned({1: 1, 3: 4})  # size 1 settles at 4x, size 3 at once
    config = config_for(iemocap, tmp_path, heads=("mlp_pool",), per_class=(1, 3),
                        train=TrainConfig(steps=1, lr=1e-3, batch_size=4, device="cpu"))  # fmt: skip
    first = Study(config, tmp_path / "run", trainer=learner).run(log=lambda _: None, check_convergence="ends")
    assert sorted(set(first["budget"])) == [1, 4]
    said, calls = [], []
    again = Study(config, tmp_path / "run", trainer=lambda *a, **k: calls.append(a)).run(log=said.append,
                                                                                       check_convergence="ends")  # fmt: skip
    assert not calls and not [line for line in said if line.startswith(("estimated training time", "training took"))]
    pd.testing.assert_frame_equal(first, again)


def test_convergence_table_flags_moves_beyond_one_point_and_two_standard_errors():

    key = {"features": "f", "head": "h", "fold": [0, 1, 2, 3], "seed": 0}
    results = pd.concat([pd.DataFrame({**key, "size": [Size(s)] * 4, "ua": [0.5, 0.6, 0.5, 0.6]}) for s in (2, 8, 16)])
    doubled = pd.concat([pd.DataFrame({**key, "size": [Size(2)] * 4, "ua": [0.6, 0.7, 0.6, 0.7]}),  # +10: learning
                         pd.DataFrame({**key, "size": [Size(8)] * 4, "ua": [0.505, 0.6, 0.5, 0.6]}),  # +0.125: converged
                         # +2 on average, but +18, -14, +18, -14 by fold: noise, not learning
                         pd.DataFrame({**key, "size": [Size(16)] * 4, "ua": [0.68, 0.46, 0.68, 0.46]})])  # fmt: skip
    table = convergence_table(results, doubled)
    assert list(table["budget"]) == [1, 1, 1]
    assert list(table["flagged"]) == [True, False, False]
    assert table["change_points"].round(3).tolist() == [10.0, 0.125, 2.0]
    # per-fold changes +0.5, 0, 0, 0: the standard error of their mean is 0.125 points; +18/-14 twice: 9.24
    assert table["change_se_points"].round(3).tolist() == [0.0, 0.125, 9.238]


def test_a_cell_s_budget_is_the_first_whose_doubling_no_longer_moves_it():
    from budget.analysis import cell_budgets

    key = {"features": "f", "head": "h", "fold": [0, 1], "seed": 0}

    def runs(size, budget, ua):
        return pd.DataFrame({**key, "size": [Size(size)] * 2, "ua": ua, "budget": budget})

    ladder = pd.concat([runs(2, 1, [0.5, 0.6]), runs(2, 2, [0.6, 0.7]), runs(2, 4, [0.6, 0.7]),  # settles at 2x
                        runs(4, 1, [0.5, 0.5]), runs(4, 2, [0.5, 0.5]),  # settled at once
                        runs(8, 1, [0.3, 0.3]), runs(8, 2, [0.4, 0.4]), runs(8, 4, [0.5, 0.5]),  # still moving at
                        runs(8, 8, [0.6, 0.6])])  # the cap  # fmt: skip
    table = convergence_table(pd.DataFrame(), ladder)
    assert [(int(s.per_class), b) for s, b in zip(table["size"], table["budget"], strict=True)] == [
        (2, 1), (2, 2), (4, 1), (8, 1), (8, 2), (8, 4)]
    budgets = cell_budgets(table)
    assert budgets["budget"].tolist() == [2, 1, 8] and budgets["converged"].tolist() == [True, True, False]


def test_a_move_beyond_a_point_but_within_its_noise_is_named_as_uncertain(capsys):
    """Two points on average, but +18 and -14 by fold: counted as converged, and the terminal says more seeds
    would tell; a one-point-and-two-errors move is not named so."""
    from types import SimpleNamespace

    from budget.analysis import cell_budgets
    from budget.cli.studies import _print_unconverged

    key = {"features": "f", "head": "h", "fold": [0, 1, 2, 3], "seed": 0}
    ladder = pd.concat([pd.DataFrame({**key, "size": [Size(16)] * 4, "ua": [0.5, 0.6, 0.5, 0.6], "budget": 1}),
                        pd.DataFrame({**key, "size": [Size(16)] * 4, "ua": [0.68, 0.46, 0.68, 0.46], "budget": 2}),
                        pd.DataFrame({**key, "size": [Size(8)] * 4, "ua": [0.5, 0.6, 0.5, 0.6], "budget": 1}),
                        pd.DataFrame({**key, "size": [Size(8)] * 4, "ua": [0.5, 0.6, 0.5, 0.6], "budget": 2})])  # fmt: skip
    table = convergence_table(pd.DataFrame(), ladder)
    _print_unconverged(SimpleNamespace(convergence=table, budgets=cell_budgets(table), display=str))
    printed = " ".join(capsys.readouterr().err.split())
    assert printed == ("uncertain: f + h at 16 per class moves +2.0 ± 9.2 UA points from 1x to 2x the budget, within "
                       "two standard errors: counted as converged; more --seeds tell seed noise from learning")


def test_a_config_file_s_training_settings_hold_unless_typed(tmp_path):
    from budget.api import configured

    toml = tmp_path / "study.toml"
    toml.write_text('device = "cpu"\nsteps = 7\nseeds = 2\nepochs = 11\nframe_dtype = "float32"\n')
    from_file = configured(toml, {})
    assert (from_file.train.device, from_file.train.steps, from_file.seeds, from_file.train.epochs) == ("cpu", 7, 2, 11)
    assert from_file.frame_dtype == "float32"
    typed = configured(toml, dict(device="auto", steps=9, seeds=1, epochs=3, frame_dtype="float16"))
    assert (typed.train.device, typed.train.steps, typed.seeds, typed.train.epochs, typed.frame_dtype) == ("auto", 9, 1, 3, "float16")


def test_every_study_option_on_the_command_line_is_a_config_key_of_the_same_name_and_back():
    """One declaration per setting: the options of curve and compare and the TOML keys they set are listed from
    the configs' fields, and each option typed sets the key of its name."""
    from typer.main import get_command

    from budget.cli.options import RUN_OPTIONS, declared_settings
    from budget.settings import cli_form

    command = get_command(app)
    own = {"curve": {"target", "report", "check_convergence", "check_every_size"}, "compare": {"report", "check_convergence"}}
    keys = {f.name for owner in (StudyConfig, TrainConfig) for f in fields(owner) if cli_form(f.metadata)}
    assert keys == set(declared_settings()) and {"seeds", "steps", "n_folds", "file_identity", "device", "heads",
                                                 "per_class", "n"} <= keys  # fmt: skip
    for name, extra in own.items():
        params = {param.name for param in command.commands[name].params}
        assert params == keys | set(RUN_OPTIONS) | extra, name
    for key in keys:  # every such key is also a TOML key
        assert StudyConfig().with_overrides(**{key: None}) == StudyConfig()


def test_heads_that_pool_first_train_on_statistics_alone_and_give_what_they_give_beside_frames(iemocap, tmp_path):
    seen = {}

    def spy(head, inputs, labels, runs, n_classes, config, **kwargs):
        seen.setdefault(head, set()).add(inputs["single"].frames is None)
        return train_head(head, inputs, labels, runs, n_classes, config, **kwargs)

    pooled = ("logreg", "mean_pool", "meanmax_pool")
    alone = Study(config_for(iemocap, tmp_path, heads=pooled, seeds=1), tmp_path / "alone", trainer=spy).run(log=lambda _: None)
    assert seen == dict.fromkeys(pooled, {True})  # no frame was loaded
    seen.clear()
    beside = Study(config_for(iemocap, tmp_path, heads=(*pooled, "mlp_pool"), seeds=1), tmp_path / "beside",
                   trainer=spy).run(log=lambda _: None)  # fmt: skip
    assert seen == {**dict.fromkeys(pooled, {False}), "mlp_pool": {False}}
    metrics = ["features", "head", "size", "fold", "seed", "ua", "wa", "macro_f1", "confusion", "inputs"]
    pd.testing.assert_frame_equal(alone[metrics].reset_index(drop=True),
                                  beside[beside["head"].isin(pooled)][metrics].reset_index(drop=True))  # fmt: skip


def test_a_study_whose_frames_would_not_fit_reads_them_from_the_store_and_one_that_never_fits_stops_in_one_line(
        iemocap, tmp_path, monkeypatch):  # fmt: skip
    """The guard reads the store's index: frame heads count every frame (as loaded, uploaded and their own copy),
    heads that pool first the statistics alone, and training the least it needs beside them; under a limit that a
    copy of every frame exceeds, the frames stay in the store, evaluation batches shrink to what is left and the
    results are the same; under one that even that exceeds, nothing is loaded."""
    from budget.features import FeatureStore, parse_feature_spec
    from budget.study import memory

    lines = []
    pooled = Study(config_for(iemocap, tmp_path, heads=("mean_pool",), seeds=1), tmp_path / "pooled")
    pooled.run(log=lines.append)
    line, training = [line for line in lines if line.startswith("memory: ")]
    assert "lld" in line and "statistics only" in line and "available now" in line
    assert "a chunk's activations (32 MB)" in training and "evaluation" not in training  # nothing gathered to evaluate
    framed = config_for(iemocap, tmp_path, heads=("mlp_pool", "attn_pool"), seeds=1)
    inputs = Study(framed, tmp_path / "framed").load_inputs(log=lambda _: None)
    footprint = FeatureStore(framed.store).footprint(parse_feature_spec("lld"), inputs.data.manifest, framed.entry_settings())
    need = memory.feature_memory("lld", footprint, list(framed.heads), framed.train)
    values = inputs.features["lld"].frames.size  # as loaded (float16), uploaded (float32), centred for mlp_pool
    assert need.bytes >= values * (2 + 4 + 2) and need.holds.endswith("for mlp_pool, attn_pool")
    assert need.mapped < need.bytes

    copied = Study(framed, tmp_path / "copied").run(log=lambda _: None)
    lines.clear()
    least = memory.least_training_bytes(list(framed.heads), framed.train)  # beside the features, in one process
    between = replace(framed, max_memory=((need.mapped + need.bytes) / 2 + least) / memory.GB)
    read = Study(between, tmp_path / "read").run(log=lines.append)
    features_line, training_line = [line for line in lines if line.startswith("memory: ")]
    assert "read from the store as training asks" in features_line
    assert "this process; with a chunk's activations" in training_line and "(shrunk to fit" in training_line
    metrics = ["features", "head", "size", "fold", "seed", "ua", "wa", "macro_f1", "confusion"]
    pd.testing.assert_frame_equal(copied[metrics], read[metrics])  # frames from the store, smaller evaluation batches

    too_small = replace(framed, max_memory=(need.mapped + least) / memory.GB / 2)
    loads = []
    monkeypatch.setattr(FeatureStore, "load", lambda *a, **k: loads.append(1))
    with pytest.raises(BudgetError, match=r"this study's features need about .* GB and training at least 0.09 GB more, more "
                                          r"than .* \(--max-memory .*\); the largest is lld, .* read from the store as "
                                          r"training asks"):  # fmt: skip
        Study(too_small, tmp_path / "refused").run(log=lambda _: None)
    assert not loads and not (tmp_path / "refused" / "results.parquet").exists()
    result = runner.invoke(app, ["curve", "--corpus", "iemocap", "--root", str(iemocap), "--features", "lld", "--model",
                                 "mlp_pool", "--store", framed.store, "--max-memory", "0.00001", "--no-report",
                                 "--run-dir", str(tmp_path / "cli")])  # fmt: skip
    assert result.exit_code == 2 and result.output.count("error:") == 1 and "--max-memory 1e-05" in result.output


def test_a_study_reads_the_features_budget_extract_stored_with_the_same_frame_dtype(iemocap, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = str(tmp_path / "store")
    extracted = runner.invoke(app, ["extract", "--corpus", "iemocap", "--root", str(iemocap), "--features", "lld",
                                    "--store", store, "--frame-dtype", "float32"])  # fmt: skip
    assert extracted.exit_code == 0, extracted.output
    result = runner.invoke(app, ["curve", "--corpus", "iemocap", "--root", str(iemocap), "--features", "lld", "--store", store,
                                 "--model", "mean_pool", "--per-class", "1,2", "--seeds", "1", "--frame-dtype", "float32",
                                 "--no-check-convergence", "--no-report", "--run-dir", str(tmp_path / "run"), "--device", "cpu"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "extracted" not in result.output  # the float32 entry was found, not made again
    assert len(pd.read_parquet(tmp_path / "run" / "results.parquet")) == 2 * 5
    with pytest.raises(BudgetError, match="frame_dtype must be one of"):
        StudyConfig(frame_dtype="int8")


def test_results_trained_on_inputs_that_changed_since_are_trained_again(tmp_path):
    """A resumed study never serves results of other audio: a changed wav retrains its job and says so."""
    import numpy as np
    import soundfile as sf

    root = build_iemocap(tmp_path / "iemocap", sessions=2)
    config = config_for(root, tmp_path, heads=("logreg",), per_class=(1,))
    calls, lines = [], []
    counting = lambda *a, **k: (calls.append(a[0]), train_head(*a, **k))[1]  # noqa: E731
    first = Study(config, tmp_path / "run", trainer=counting).run(log=lines.append)
    Study(config, tmp_path / "run", trainer=counting).run(log=lines.append)
    assert calls == ["logreg"]  # unchanged inputs: nothing retrained

    wav = sorted((root / "Session1" / "sentences" / "wav").rglob("*.wav"))[0]
    audio, rate = sf.read(wav)
    sf.write(wav, np.random.default_rng(0).standard_normal(len(audio)) * 0.1, rate)
    lines.clear()
    second = Study(config, tmp_path / "run", trainer=counting).run(log=lines.append)
    assert calls == ["logreg", "logreg"]
    assert f"lld / logreg: the corpus, its audio or the stored features changed since {len(first)} runs" in "\n".join(lines)
    assert len(second) == len(first) and second["inputs"].nunique() == 1
    assert set(second["inputs"]) != set(first["inputs"])


@pytest.mark.parametrize(
    "line",
    ['seeds = "three"', "features = 5", 'max_seconds = "x"', "max_seconds = nan", "max_seconds = -1", 'steps = "many"',
     "lr = -0.1", 'per_class = ["thirty"]', "n_folds = 1.5"],
)  # fmt: skip
def test_a_config_value_of_the_wrong_type_is_one_error_line_and_writes_nothing(line, tmp_path, iemocap):
    toml = tmp_path / "study.toml"
    toml.write_text(f'corpus = "iemocap"\nroot = "{iemocap}"\nstore = "{tmp_path / "store"}"\n{line}\n')
    result = runner.invoke(app, ["curve", "--config", str(toml), "--run-dir", str(tmp_path / "run"), "--device", "cpu"])
    assert result.exit_code == 2, result.output
    lines = [text for text in result.output.splitlines() if text.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    assert not (tmp_path / "run").exists() and not (tmp_path / "store").exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [('train = "x"', "train must be a table"), ("train = 3", "train must be a table"),
     ("train = [1, 2]", "train must be a table"), ("[train]\nsteps = 5\nstesp = 9", "unknown training setting.*stesp"),
     (b"seeds = 2\n# \xe9t\xe9\n", "not UTF-8 text")],
)  # fmt: skip
def test_a_bad_config_file_is_one_error_line_and_writes_nothing(text, message, tmp_path, iemocap):
    toml = tmp_path / "study.toml"
    head = f'corpus = "iemocap"\nroot = "{iemocap}"\nstore = "{tmp_path / "store"}"\n'.encode()
    toml.write_bytes(head + (text if isinstance(text, bytes) else text.encode()) + b"\n")
    result = runner.invoke(app, ["curve", "--config", str(toml), "--run-dir", str(tmp_path / "run"), "--device", "cpu"])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error:"), result.output
    assert re.search(message, lines[0]), lines[0]
    assert not (tmp_path / "run").exists() and not (tmp_path / "store").exists()


def test_a_second_study_on_a_folder_being_written_is_refused_and_writes_nothing(iemocap, tmp_path):
    import fcntl

    run = tmp_path / "run"
    run.mkdir()
    with (run / ".lock").open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a study training into it
        with pytest.raises(BudgetError, match="another study is writing"):
            Study(config_for(iemocap, tmp_path, heads=("logreg",), per_class=(1,)), run).run(log=lambda _: None)
    assert sorted(p.name for p in run.iterdir()) == [".lock"]


def test_a_read_only_run_folder_is_one_error_and_no_traceback(iemocap, tmp_path, monkeypatch):
    """Tests run as root here, so the disk's refusal is simulated: mkdir and writes raise EROFS."""
    import errno

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    config = config_for(iemocap, tmp_path, heads=("logreg",), per_class=(1,))
    Study(config, tmp_path / "first").run(log=lambda _: None)  # the store holds the features: reading it needs no writes
    monkeypatch.setattr(Path, "mkdir", read_only)
    with pytest.raises(BudgetError, match=r"cannot create the folder .*run: Read-only file system"):
        Study(config, tmp_path / "run").run(log=lambda _: None)
    monkeypatch.undo()
    (tmp_path / "run").mkdir()
    monkeypatch.setattr("os.replace", read_only)  # the folder exists, no file can be put in place
    monkeypatch.setattr(Path, "unlink", read_only)  # nor removed: the cleanup of a failed write fails too
    with pytest.raises(BudgetError, match=r"cannot write .*config.json: Read-only file system"):
        Study(config, tmp_path / "run").run(log=lambda _: None)


def test_the_ray_executor_without_ray_is_one_error_line_before_any_work(iemocap, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)  # as where the optional extra is not installed
    result = runner.invoke(app, ["curve", "--corpus", "iemocap", "--root", str(iemocap), "-f", "lld", "--model", "logreg",
                                 "--store", str(tmp_path / "store"), "--run-dir", str(tmp_path / "run"),
                                 "--executor", "ray"])  # fmt: skip
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and lines == ['error: the ray executor needs Ray: pip install "budget-ser[ray]"']
    assert not (tmp_path / "run").exists() and not (tmp_path / "store").exists()


def test_a_single_size_may_be_written_without_a_list():
    assert StudyConfig().with_overrides(per_class=30).per_class == (30,)


def test_damaged_files_in_a_run_folder_are_retrained_or_named_never_a_traceback(iemocap, tmp_path, monkeypatch):
    config = config_for(iemocap, tmp_path, heads=("logreg",), per_class=(1,))
    run = tmp_path / "run"
    Study(config, run).run(log=lambda _: None)
    part = next((run / "parts").glob("*.parquet"))
    part.write_bytes(part.read_bytes()[:100])  # a copy cut short
    lines = []
    resumed = Study(config, run).run(log=lines.append)
    assert any("is damaged" in line and "trained again" in line for line in lines) and len(resumed) == 10

    (run / "results.parquet").write_bytes(b"PAR1 cut")
    result = runner.invoke(app, ["report", str(run), "--out", str(tmp_path / "report")])
    assert result.exit_code == 2 and "results.parquet is damaged" in result.output and "Traceback" not in result.output
    (run / "config.json").write_text('{"digest": ')
    with pytest.raises(BudgetError, match="config.json is damaged"):
        Study(config, run).run(log=lambda _: None)


def test_a_full_disk_is_one_error_and_leaves_no_half_written_file(iemocap, tmp_path, monkeypatch):
    import errno

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", no_space)
    with pytest.raises(BudgetError, match="no space left on the disk writing"):
        Study(config_for(iemocap, tmp_path, heads=("logreg",), per_class=(1,)), tmp_path / "run").run(log=lambda _: None)
    assert not list(tmp_path.rglob("*.tmp"))


def test_a_fold_file_shapes_the_study_from_the_command_line(iemocap, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # reports/ goes here
    fold_file = tmp_path / "folds.csv"
    fold_file.write_text("group,fold\nSes01,1\nSes02,1\nSes03,2\nSes04,2\nSes05,3\n")
    result = runner.invoke(app, ["compare", "--corpus", "iemocap", "--root", str(iemocap), "--features", "lld",
                                 "-m", "logreg", "--per-class", "1", "--seeds", "1", "--device", "cpu",  # -m as in curve
                                 "--store", str(tmp_path / "store"), "--fold-file", str(fold_file),
                                 "--run-dir", str(tmp_path / "run")])  # fmt: skip
    assert result.exit_code == 0, result.output
    results = pd.read_parquet(tmp_path / "run" / "results.parquet")
    assert sorted(set(results["fold_name"])) == ["Ses01+Ses02", "Ses03+Ses04", "Ses05"]
    report = (tmp_path / "reports" / "run" / "report.md").read_text()
    assert "3 speaker-independent folds (Ses01+Ses02, Ses03+Ses04, Ses05)" in report


def test_folds_from_the_command_line_shape_a_24_speaker_corpus(tmp_path):
    from conftest import write_wav

    from budget.api import configured
    from budget.study import prepare

    rows = ["path,label,speaker"]
    for speaker in range(24):
        for i, label in enumerate(("neutral", "happy", "sad", "angry")):
            write_wav(tmp_path / "audio" / f"a{speaker:02d}_{i}.wav", seconds=0.2, seed=speaker * 4 + i)
            rows.append(f"audio/a{speaker:02d}_{i}.wav,{label},actor{speaker:02d}")
    (tmp_path / "corpus.csv").write_text("\n".join(rows) + "\n")
    config = configured(None, {"corpus": "csv", "root": str(tmp_path / "corpus.csv"), "n_folds": 6})
    data = prepare(config, log=lambda _: None)
    assert data.folds.nunique() == 6 and len(data.fold_names) == 6
    assert all(len(name.split("+")) == 4 for name in data.fold_names.values())  # 24 actors, 4 to a fold


def test_a_study_with_output_redirected_writes_progress_lines_with_an_eta(iemocap, tmp_path, monkeypatch, capsys):
    import budget.progress as progress

    monkeypatch.setattr(progress, "LOG_EVERY_SECONDS", 0.0)
    config = config_for(iemocap, tmp_path, heads=("mean_pool", "logreg"))
    Study(config, tmp_path / "run").run(log=lambda _: None)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("training: ")]
    assert lines and re.fullmatch(r"training: \d+/40 runs \(\d+%\), elapsed \d+:\d\d, eta (\d+:\d\d|unknown)", lines[0])
    assert lines[-1].startswith("training: 40/40 runs (100%)")
    counts = [tuple(map(int, re.match(r"training: (\d+)/40 runs \((\d+)%\)", line).groups())) for line in lines]
    assert all(a[0] <= b[0] and a[1] <= b[1] for a, b in zip(counts, counts[1:], strict=False))  # runs and work advance together


def test_the_eta_follows_a_head_whose_speed_halves_midway():
    """Twenty chunks priced at a second each: the first ten take a second, the last ten two (a CPU burner starts).
    Once a few slow chunks have finished, the time left predicted is within 30% of the time that actually remained,
    where the estimate made before training, kept, would be off by half."""
    from types import SimpleNamespace

    from budget.execute import Chunk, Tracker, Work

    now = [0.0]
    job = SimpleNamespace(name="lld", head="mlp_pool")
    chunks = [Chunk(job, runs=[None, None], estimate=1.0, units=10) for _ in range(20)]
    taken = [1.0] * 10 + [2.0] * 10
    tracker = Tracker([Work("results", TrainConfig(), chunks)], clock=lambda: now[0])
    seen = []  # (share of runs done, predicted seconds left, seconds that remained)
    for chunk, seconds in zip(chunks, taken, strict=True):
        tracker.start(chunk)
        for _ in range(chunk.units):
            now[0] += seconds / chunk.units
            tracker.advance(chunk, 1 / chunk.units)
            seen.append((tracker.done_runs / tracker.total_runs, tracker.remaining(), sum(taken) - now[0]))
        tracker.finished(chunk, seconds)
    assert tracker.done_runs == pytest.approx(tracker.total_runs) and tracker.remaining() == 0
    for share, predicted, remained in seen:
        if 0.5 < share <= 0.55:  # the first slow chunk: it counts as it goes, the rest not yet seen
            assert remained * 0.5 < predicted < remained * 0.7
        if 0.65 <= share < 1:  # three slow chunks on
            assert abs(predicted - remained) <= 0.3 * remained, (share, predicted, remained)
    (at_75,) = [remained for share, _, remained in seen if share == pytest.approx(0.75)]
    assert abs(5.0 - at_75) > 0.3 * at_75  # the chunks' price alone (5 left at a second) is off by half


def test_the_eta_prices_each_feature_set_and_head_at_its_own_speed():
    """The probes misprice each job its own way (on one machine, LLD at 0.8 of its price, Whisper at 1.3): a
    chunk's time left is predicted from its own job's chunks, then its head's, then any."""
    from types import SimpleNamespace

    from budget.execute import Chunk, Tracker, Work

    now = [0.0]
    jobs = [SimpleNamespace(name=name, head=head) for name, head in (("lld", "mlp_pool"), ("whisper", "mlp_pool"),
                                                                     ("whisper", "logreg"))]  # fmt: skip
    first = [Chunk(job, runs=[None], estimate=1.0, units=1) for job in jobs[:2]]
    rest = [Chunk(job, runs=[None], estimate=1.0, units=1) for job in jobs]
    tracker = Tracker([Work("results", TrainConfig(), [*first, *rest])], clock=lambda: now[0])
    for chunk, seconds in zip(first, (0.5, 3.0), strict=True):  # lld at half its price, whisper at three times
        tracker.start(chunk)
        now[0] += seconds
        tracker.finished(chunk, seconds)
    # lld + mlp_pool: 0.5; whisper + mlp_pool: 3; whisper + logreg, no logreg yet: every job's (3.5 over 2)
    assert tracker.remaining() == pytest.approx(0.5 + 3.0 + 1.75)
