"""Studies on a Ray cluster: the same results as in-process, user errors as one line."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
from corpus_builders import build_iemocap
from study_helpers import measured, small_study

from budget.engine.config import TrainConfig
from budget.errors import BudgetError
from budget.features.distributed import Where
from budget.registry import train as train_head
from budget.study import Study, StudyConfig

ray = pytest.importorskip("ray", reason="Ray is an optional extra (pip install 'budget-ser[ray]')")


@pytest.fixture(scope="module")
def iemocap(tmp_path_factory):
    return build_iemocap(tmp_path_factory.mktemp("iemocap"))


@pytest.fixture(scope="module")
def crash_marker(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("crash") / "crashed-once"


@pytest.fixture(scope="module")
def cluster(crash_marker):
    """One local cluster of 2 CPUs for the module (a study joins a running cluster and leaves it running)."""
    tests = str(Path(__file__).resolve().parent)  # workers unpickle this module's trainers
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": {"PYTHONPATH": tests, "CRASH_MARKER": str(crash_marker)}})  # fmt: skip
    yield
    ray.shutdown()


def test_a_study_on_ray_gives_the_results_it_gives_in_process(iemocap, tmp_path, cluster):
    """With the convergence check, whose 2x runs go on from the weights the 1x runs' tasks sent back."""
    local = Study(small_study(iemocap, tmp_path), tmp_path / "local").run(log=lambda _: None, check_convergence="ends")
    lines = []
    on_ray = Study(small_study(iemocap, tmp_path, executor="ray"), tmp_path / "ray").run(log=lines.append,
                                                                                       check_convergence="ends")  # fmt: skip
    pd.testing.assert_frame_equal(measured(local), measured(on_ray))
    from budget.runfolder import FinishedStudy

    checked = [FinishedStudy.open(tmp_path / name).convergence for name in ("local", "ray")]
    assert (checked[0]["head"] == "mlp_pool").any()
    pd.testing.assert_frame_equal(measured(checked[0]), measured(checked[1]))  # the 2x runs, gone on from 1x
    assert any("across the cluster's workers" in line for line in lines)
    assert small_study(iemocap, tmp_path, executor="ray").digest() == small_study(iemocap, tmp_path).digest()


def _store_reading_trainer(head, inputs, labels, runs, n_classes, config, **kwargs):
    from budget.features.featureset import MappedFrames

    frames = inputs["single"].frames
    if frames is not None and not isinstance(frames, MappedFrames):
        raise BudgetError(f"{head}: a task received its frames, not the store's file names")
    return train_head(head, inputs, labels, runs, n_classes, config, **kwargs)


def test_a_study_on_ray_with_a_shared_store_reads_frames_from_it_with_the_in_process_results(iemocap, tmp_path, cluster):
    local = Study(small_study(iemocap, tmp_path), tmp_path / "local").run(log=lambda _: None)
    lines = []
    shared = small_study(iemocap, tmp_path, executor="ray", shared_store=True)
    on_ray = Study(shared, tmp_path / "ray", trainer=_store_reading_trainer).run(log=lines.append)
    pd.testing.assert_frame_equal(measured(local), measured(on_ray))
    assert "read from the store as training asks" in next(line for line in lines if line.startswith("memory: "))
    with pytest.raises(BudgetError, match="received its frames"):  # without the setting, tasks get every frame
        Study(small_study(iemocap, tmp_path, executor="ray"), tmp_path / "copied", trainer=_store_reading_trainer).run(
            log=lambda _: None)


def _refusing_trainer(head, inputs, labels, runs, n_classes, config, **kwargs):
    if head == "mean_pool":
        raise BudgetError("mean_pool cannot read these features")
    return train_head(head, inputs, labels, runs, n_classes, config, **kwargs)


def test_a_user_error_in_a_task_is_the_same_one_line_error(iemocap, tmp_path, cluster):
    study = Study(small_study(iemocap, tmp_path, executor="ray", heads=("logreg", "mean_pool")), tmp_path / "run",
                  trainer=_refusing_trainer)  # fmt: skip
    with pytest.raises(BudgetError, match="^mean_pool cannot read these features$"):
        study.run(log=lambda _: None)


def _crashing_trainer(head, inputs, labels, runs, n_classes, config, **kwargs):
    """Kills its worker process the first time it is called anywhere on the cluster."""
    marker = Path(os.environ["CRASH_MARKER"])
    if head == "mlp_pool" and not marker.exists():
        marker.touch()
        os._exit(1)
    return train_head(head, inputs, labels, runs, n_classes, config, **kwargs)


def test_a_worker_that_dies_mid_study_has_its_task_run_again_with_the_same_results(iemocap, tmp_path, cluster,
                                                                                  crash_marker):  # fmt: skip
    config = small_study(iemocap, tmp_path, heads=("logreg", "mlp_pool"))
    local = Study(config, tmp_path / "local").run(log=lambda _: None)
    on_ray = Study(replace(config, executor="ray"), tmp_path / "ray", trainer=_crashing_trainer).run(log=lambda _: None)
    assert crash_marker.exists()  # a worker died
    pd.testing.assert_frame_equal(measured(local), measured(on_ray))


def test_an_unknown_executor_is_one_clear_error():
    with pytest.raises(BudgetError, match="executor must be one of local, ray, ray:ADDRESS"):
        StudyConfig(executor="slurm")


def test_extraction_on_ray_stores_what_local_extraction_stores_and_resumes_alike(tmp_path, cluster):
    """Batches run on the workers; the caller commits each as a shard, so a half-done extraction resumes."""
    import numpy as np
    from corpus_builders import build_emodb, emodb_names

    from budget.corpora import load_corpus
    from budget.features import FeatureStore, parse_feature_spec

    manifest = load_corpus("emodb", build_emodb(tmp_path / "emodb", emodb_names(24)))
    lld = parse_feature_spec("lld").configure("cpu", "fp32")
    local, on_ray = FeatureStore(tmp_path / "local"), FeatureStore(tmp_path / "ray")
    local.extract(lld, manifest, batch_size=4)
    half = on_ray.extract(lld, manifest.iloc[:10], batch_size=4, executor=Where.parse("ray"))
    rest = on_ray.extract(lld, manifest, batch_size=4, executor=Where.parse("ray"))
    assert (half.extracted, rest.cached, rest.extracted) == (10, 10, 14)
    a, b = local.load(lld, manifest), on_ray.load(lld, manifest)
    np.testing.assert_array_equal(a.lengths, b.lengths)
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_array_equal(a.mean, b.mean)


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="the reaper reads /proc (Linux)")
def test_a_local_cluster_says_nothing_of_its_token_and_ends_with_its_killed_driver(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    from budget.features.reaper import descendants, start_time

    driver = subprocess.Popen(
        [sys.executable, "-c", "from budget.features.distributed import Cluster, Where\n"
         "with Cluster(Where.parse('ray')) as ray:\n    print('up', flush=True)\n    input()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert driver.stdout.readline() == "up\n"
        cluster = [(pid, start_time(pid)) for pid in descendants(driver.pid)]
        assert len(cluster) >= 4  # GCS, raylet, its agents, the reaper
        driver.kill()
        driver.wait()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(start_time(pid) == started for pid, started in cluster):
            time.sleep(0.2)
        left = [pid for pid, started in cluster if start_time(pid) == started]
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        assert not left, f"{len(left)} of the cluster's processes outlived the driver by 20 s"
        assert "Token authentication" not in driver.stderr.read()
    finally:
        driver.kill()


def test_an_acquisition_study_on_ray_gives_its_in_process_results(iemocap, tmp_path, cluster):
    from budget.study import Acquisition, AcquisitionConfig

    settings = dict(corpus="iemocap", root=str(iemocap), features=("lld",), heads=("logreg", "mean_pool"), seeds=1,
                    clips=(4, 8, "full"), strategies=("random", "margin"), store=str(tmp_path / "store"),
                    train=TrainConfig(device="cpu"))  # fmt: skip
    local = Acquisition(AcquisitionConfig(**settings), tmp_path / "local").run(log=lambda _: None)
    on_ray = Acquisition(AcquisitionConfig(executor="ray", **settings), tmp_path / "ray").run(log=lambda _: None)
    measured = [c for c in local.columns if not c.endswith("_seconds")]
    pd.testing.assert_frame_equal(local[measured], on_ray[measured])
