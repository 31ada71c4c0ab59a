"""Acquisition studies: strategies simulated on the curve's folds, with answers known before they run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from corpus_builders import build_iemocap

from budget.acquisition import Stream, acquire
from budget.analysis.acquisition import advice, overall, savings, versus_random
from budget.engine.config import TrainConfig
from budget.features.featureset import FeatureSet
from budget.grid import build_runs
from budget.registry import train as train_head
from budget.sampling import FULL, Size
from budget.study import Acquisition, AcquisitionConfig, Study, StudyConfig, prepare

TRAIN = TrainConfig(steps=20, lr=1e-2, batch_size=4, device="cpu")


def synthetic(x: np.ndarray) -> dict[str, FeatureSet]:
    """Pooled features as a feature set of one frame an utterance (what logreg reads)."""
    n = len(x)
    ids = np.array([f"u{i:04d}" for i in range(n)])
    return {"single": FeatureSet("synthetic", ids, np.ones(n, np.int64), np.arange(n), x.astype(np.float16),
                                 x.astype(np.float32), x.astype(np.float32))}  # fmt: skip


def simulate(x, labels, folds, names, sizes, seeds) -> pd.DataFrame:
    """Every fold's streams of ``names`` through :func:`acquire` with logreg, as one results table."""
    rows = []
    for fold in sorted(set(folds)):
        streams = [Stream(int(fold), seed, name) for seed in range(seeds) for name in names]
        rows += acquire(train_head, "logreg", synthetic(x), labels, folds, streams, sizes, 2, TRAIN, ["a", "b"])
    return pd.DataFrame(rows).assign(features="synthetic", head="logreg")


def test_entropy_beats_random_where_a_few_clips_decide_the_boundary():
    """A threshold at x = 0.6 in a uniform pool: one class is a fifth of it, and only the clips near the boundary tell
    where it lies, so uncertainty sampling finds it with far fewer clips than random draws."""
    rng = np.random.default_rng(0)
    x = np.stack([rng.uniform(-1, 1, 600), rng.uniform(-1, 1, 600)], axis=1)
    labels, folds = (x[:, 0] > 0.6).astype(int), rng.integers(0, 10, 600)
    sizes = [*map(Size, (4, 6, 8, 12, 16, 24, 32)), FULL]
    table = simulate(x, labels, folds, ["random", "entropy"], sizes, seeds=3)
    (entropy,) = overall(table)
    assert entropy.strategy == "entropy" and entropy.better and entropy.points > 3  # UA points, interval above zero
    paired = versus_random(table)
    inner = paired[[size.balanced and size > 4 for size in paired["size"]]]
    assert (inner["points"] > 0).all() and not (paired["distinguishable"] & (paired["points"] < 0)).any()
    found = savings(table, pool_clips=float(np.bincount(folds).max()))
    assert any(s.distinguishable and s.saved > 0 for s in found)
    (line,) = advice([entropy], found)
    assert line.startswith("For synthetic + logreg, entropy beats labelling at random by +") and "saves about" in line


def test_on_a_pool_of_noise_no_strategy_is_reported_better_than_random():
    rng = np.random.default_rng(1)
    x, labels, folds = rng.normal(0, 1, (300, 3)), rng.integers(0, 2, 300), rng.integers(0, 5, 300)
    names = ["random", "entropy", "margin", "kcenter", "badge"]
    table = simulate(x, labels, folds, names, [Size(4), Size(8), Size(16), Size(32), FULL], seeds=2)
    found = overall(table)
    assert {o.strategy for o in found} == set(names[1:]) and not any(o.better for o in found)
    assert all(o.level == pytest.approx(1 - 0.05 / 4) for o in found)  # corrected for the four compared
    (line,) = advice(found, savings(table, pool_clips=240.0))
    assert "no strategy is distinguishable from labelling at random" in line and "label clips at random" in line


@pytest.fixture(scope="module")
def iemocap(tmp_path_factory) -> Path:
    return build_iemocap(tmp_path_factory.mktemp("iemocap"))


def test_the_balanced_arm_is_the_curve_at_the_same_sizes_and_seeds(iemocap, tmp_path):
    """Balanced acquisition labels the curve's nested subsets (k per class is k x classes clips), so it gives the
    curve's numbers run by run: exactly for logreg, which fits each run alone; mean_pool fits a chunk's runs jointly,
    so a test clip whose classes tie within the optimiser's tolerance may go either way with other mates."""
    settings = dict(corpus="iemocap", root=str(iemocap), features=("lld",), heads=("logreg", "mean_pool"), seeds=2,
                    store=str(tmp_path / "store"), train=TrainConfig(device="cpu"))  # fmt: skip
    config = StudyConfig(per_class=(1, 2, 4), **settings)
    curve = Study(config, tmp_path / "curve").run(log=lambda _: None)
    acquired = Acquisition(AcquisitionConfig(clips=(4, 8, 16), strategies=("balanced",), **settings), tmp_path / "acq"
                           ).run(log=lambda _: None)  # fmt: skip
    data = prepare(config, log=lambda _: None)
    ids = data.manifest["utt_id"].to_numpy()
    subsets = {(run.fold, run.seed, 4 * run.size.per_class): set(ids[run.train])
               for run in build_runs(data.folds.to_numpy(), data.manifest["label"].to_numpy(), data.plan.sizes, 2)}
    for (fold, seed), rows in acquired[acquired["head"] == "logreg"].groupby(["fold", "seed"]):
        labelled = set()
        for row in rows.sort_values("n_train").itertuples():
            labelled |= set(json.loads(row.acquired))
            assert labelled == subsets[(fold, seed, row.size.per_class)]  # the same clips
    merged = curve.assign(clips=[4 * s.per_class for s in curve["size"]]).merge(
        acquired.assign(clips=[s.per_class for s in acquired["size"]]), on=["head", "fold", "seed", "clips"],
        suffixes=("_curve", ""))  # fmt: skip
    assert len(merged) == len(curve) == 2 * 3 * 5 * 2
    logreg = merged[merged["head"] == "logreg"]
    assert np.array_equal(logreg["ua_curve"], logreg["ua"]) and np.array_equal(logreg["confusion_curve"], logreg["confusion"])
    mean_pool = merged[merged["head"] == "mean_pool"]
    assert (mean_pool["ua_curve"] == mean_pool["ua"]).mean() >= 0.9


def test_the_random_arm_labels_clips_at_the_pool_s_own_mix_and_the_same_seed_makes_the_same_picks(iemocap, tmp_path):
    settings = dict(corpus="iemocap", root=str(iemocap), features=("lld",), heads=("logreg",), seeds=12,
                    clips=(4, 16), store=str(tmp_path / "store"), train=TRAIN)  # fmt: skip
    both = Acquisition(AcquisitionConfig(strategies=("random", "entropy"), **settings), tmp_path / "a").run(log=lambda _: None)
    random = both[both["strategy"] == "random"]
    counts = np.array([json.loads(c) for c in random[random["size"] == 16]["labelled_counts"]]).sum(axis=0)
    # each pool of 32 clips holds neutral, happy, sad, angry 8, 12, 4, 8; the seed set takes one of each, the rest
    # of the 16 come at random from the 7, 11, 3, 7 left
    expected = np.array([1, 1, 1, 1]) + 12 * np.array([7, 11, 3, 7]) / 28
    assert np.allclose(counts / counts.sum(), expected / 16, atol=0.03)
    alone = Acquisition(AcquisitionConfig(strategies=("entropy",), **settings), tmp_path / "b").run(log=lambda _: None)
    mine = both[both["strategy"] == "entropy"].reset_index(drop=True)
    columns = ["size", "fold", "seed", "ua", "acquired", "labelled_counts"]
    pd.testing.assert_frame_equal(mine[columns], alone[columns])  # a stream's picks do not depend on its mates


def test_an_interrupted_acquisition_resumes_to_the_same_results(iemocap, tmp_path):
    settings = dict(corpus="iemocap", root=str(iemocap), features=("lld",), heads=("mean_pool",), seeds=1,
                    clips=(4, 8, "full"), strategies=("random", "kcenter"), store=str(tmp_path / "store"), train=TRAIN)  # fmt: skip
    config = AcquisitionConfig(**settings)
    whole = Acquisition(config, tmp_path / "whole").run(log=lambda _: None)
    calls = []

    def crash_on_the_fourth(*args, **kwargs):  # three rounds of the first fold's task, then a crash in the second
        calls.append(args[0])
        if len(calls) == 4:
            raise KeyboardInterrupt
        return train_head(*args, **kwargs)

    with pytest.raises(KeyboardInterrupt):
        Acquisition(config, tmp_path / "run", trainer=crash_on_the_fourth).run(log=lambda _: None)
    assert len(list((tmp_path / "run" / "parts").glob("*.parquet"))) == 1
    resumed = Acquisition(config, tmp_path / "run").run(log=lambda _: None)
    measured = [c for c in whole.columns if not c.endswith("_seconds")]
    pd.testing.assert_frame_equal(whole[measured], resumed[measured])
    assert set(resumed["size"]) == {4, 8, FULL} and len(resumed) == 2 * 3 * 5


def test_rounds_that_streams_share_train_once_and_the_estimate_counts_what_trains(iemocap, tmp_path):
    """The seed set's round is the same for every strategy but the oracle, and the whole pool's for all of them: each
    trains once per (fold, seed), every stream gets its row, and the announced fits are the runs trained."""
    trained, lines = [], []

    def counting(*args, **kwargs):
        trained.append(len(args[3]))
        return train_head(*args, **kwargs)

    config = AcquisitionConfig(corpus="iemocap", root=str(iemocap), features=("lld",), heads=("logreg",), seeds=2,
                               clips=(4, 8, "full"), strategies=("random", "entropy", "balanced"),
                               store=str(tmp_path / "store"), train=TRAIN)  # fmt: skip
    table = Acquisition(config, tmp_path / "run", trainer=counting).run(log=lines.append)
    folds = table["fold"].nunique()
    assert trained == [2 * 2, 2 * 3, 2] * folds  # per fold: (seed set + oracle), three streams, the whole pool
    assert len(table) == folds * 2 * 3 * 3
    (estimate,) = [line for line in lines if line.startswith("estimated training time")]
    assert f"for {folds * 2 * 3 * 3} rounds in {sum(trained)} fits (logreg " in estimate
    assert any(line.startswith("acquiring took ") and "; estimated " in line for line in lines)  # the closing line
    first = table[table["size"] == Size(4)].pivot_table(index=["fold", "seed"], columns="strategy", values="confusion",
                                                        aggfunc="first")  # fmt: skip
    assert (first["random"] == first["entropy"]).all()
    whole = table[table["size"] == FULL].groupby(["fold", "seed"])["confusion"].nunique()
    assert (whole == 1).all()


def test_budget_acquire_writes_a_report_and_the_api_reads_it_back(iemocap, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import budget
    from budget.cli import app

    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["acquire", "--corpus", "iemocap", "--root", str(iemocap), "-f", "lld", "-m", "logreg",
                                      "--clips", "4,8,full", "--strategies", "random,entropy,balanced", "--seeds", "1",
                                      "--store", str(tmp_path / "store"), "--run-dir", str(tmp_path / "run"),
                                      "--device", "cpu"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "UA (mean) by clips annotated" in result.output and "For lld + logreg, " in result.output
    report = (tmp_path / "reports" / "run" / "report.md").read_text()
    for section in ("## Advice", "## Clips to reach a target", "## Labels per class, in clips", "## Against random"):
        assert section in report
    assert "balanced (an oracle: it reads the labels)" in report
    assert (tmp_path / "reports" / "run" / "figures" / "strategies.png").is_file()
    loaded = budget.load(tmp_path / "run")
    assert isinstance(loaded, budget.AcquisitionResult) and set(loaded.results["strategy"]) == {"random", "entropy", "balanced"}
    assert loaded.advice()[0].startswith("For lld + logreg")
    with pytest.raises(Exception, match="unknown strategy 'greedy'"):
        budget.acquire(root=iemocap, corpus="iemocap", strategies="random,greedy")
