"""A study on a two-node Ray cluster on one machine: tasks on both nodes, and a node lost mid-study survived."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
from corpus_builders import build_iemocap

from budget.engine.config import TrainConfig
from budget.registry import train as train_head
from budget.study import Study, StudyConfig

ray = pytest.importorskip("ray", reason="Ray is an optional extra (pip install 'budget-ser[ray]')")


def _recording_trainer(head, inputs, labels, runs, n_classes, config, **kwargs):
    """Trains as the study would, noting the node each chunk ran on (and slowly enough to lose a node between)."""
    node = ray.get_runtime_context().get_node_id()
    (Path(os.environ["NODE_LOG"]) / f"{node}-{time.monotonic_ns()}").touch()
    time.sleep(0.3)
    return train_head(head, inputs, labels, runs, n_classes, config, **kwargs)


def test_tasks_spread_over_two_nodes_and_a_node_lost_mid_study_changes_no_result(tmp_path):
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    nodes = tmp_path / "nodes"
    nodes.mkdir()
    environment = {"env_vars": {"PYTHONPATH": str(Path(__file__).resolve().parent), "NODE_LOG": str(nodes)}}
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    second = cluster.add_node(num_cpus=2)
    try:
        ray.init(address=cluster.address, log_to_driver=False, configure_logging=False, runtime_env=environment)
        root = build_iemocap(tmp_path / "iemocap")
        config = StudyConfig(corpus="iemocap", root=str(root), features=("lld",), heads=("logreg", "mlp_pool"),
                             per_class=(1, 2), seeds=2, store=str(tmp_path / "store"),
                             train=TrainConfig(steps=20, lr=1e-2, batch_size=4, device="cpu"))  # fmt: skip
        local = Study(config, tmp_path / "local").run(log=lambda _: None)
        parts = tmp_path / "ray" / "parts"

        def lose_the_second_node() -> None:  # once the study has written its first chunk
            while not (parts.is_dir() and any(parts.glob("*.parquet"))):
                time.sleep(0.05)
            cluster.remove_node(second)

        killer = threading.Thread(target=lose_the_second_node)
        killer.start()
        on_ray = Study(replace(config, executor="ray"), tmp_path / "ray", trainer=_recording_trainer).run(log=lambda _: None)
        killer.join()
        used = {path.name.split("-")[0] for path in nodes.iterdir()}
        assert len(used) == 2  # tasks ran on both nodes
        timings = ["train_seconds", "estimated_seconds"]
        pd.testing.assert_frame_equal(local.drop(columns=timings), on_ray.drop(columns=timings))
    finally:
        ray.shutdown()
        cluster.shutdown()
