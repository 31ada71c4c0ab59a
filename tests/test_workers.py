"""Training in worker processes side by side on this machine: the in-process results, errors as one line, and the
estimate of wall time the workers make."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from corpus_builders import build_iemocap
from study_helpers import measured, small_study

import budget.execute as execute
from budget.engine.config import TrainConfig
from budget.errors import BudgetError
from budget.execute import Chunk, Tracker, Work, makespan, torch_threads
from budget.registry import train as train_head
from budget.runfolder import FinishedStudy
from budget.study import Study, StudyConfig
from budget.study.memory import MemoryPlan


@pytest.fixture(scope="module")
def iemocap(tmp_path_factory) -> Path:
    return build_iemocap(tmp_path_factory.mktemp("iemocap"))


@pytest.fixture
def any_work(monkeypatch):
    """Workers train whatever work has more than one chunk (a test's work is priced at a second or two)."""
    monkeypatch.setattr(execute, "WORKERS_FROM", 0.0)


def test_workers_side_by_side_give_the_results_of_one_process_at_their_threads(iemocap, tmp_path, any_work):
    """With the convergence check, whose 2x runs go on from weights a worker sent back; each worker trains with one
    thread, as the process alone does here."""
    with torch_threads(1):
        local = Study(small_study(iemocap, tmp_path, seeds=1), tmp_path / "local").run(log=lambda _: None,
                                                                                   check_convergence="ends")  # fmt: skip
    lines = []
    with torch_threads(2):
        side_by_side = Study(small_study(iemocap, tmp_path, seeds=1, workers=2), tmp_path / "workers").run(
            log=lines.append, check_convergence="ends")  # fmt: skip
    assert "training in 2 worker processes side by side, 1 torch thread each (--workers sets how many)" in lines
    pd.testing.assert_frame_equal(measured(local), measured(side_by_side))
    checked = [FinishedStudy.open(tmp_path / name).convergence for name in ("local", "workers")]
    assert (checked[0]["head"] == "mlp_pool").any()
    pd.testing.assert_frame_equal(measured(checked[0]), measured(checked[1]))
    assert small_study(iemocap, tmp_path, workers=2).digest() == small_study(iemocap, tmp_path).digest()


def test_work_too_small_for_workers_trains_in_this_process(iemocap, tmp_path):
    lines = []
    Study(small_study(iemocap, tmp_path, heads=("mean_pool",), workers=2), tmp_path / "small").run(log=lines.append)
    assert not any(line.startswith("training in") and "worker processes" in line for line in lines)
    assert any(line.startswith("memory: training adds about") and "up to 2 workers" in line for line in lines)


def _failing_trainer(head, inputs, labels, runs, n_classes, config, **kwargs):
    if head == "mlp_pool":
        raise BudgetError("mlp_pool: this input cannot be trained (a user's error)")
    return train_head(head, inputs, labels, runs, n_classes, config, **kwargs)


def _dying_trainer(head, inputs, labels, runs, n_classes, config, **kwargs):
    if head == "mlp_pool":
        os.kill(os.getpid(), signal.SIGKILL)  # as the system's out-of-memory killer does
    return train_head(head, inputs, labels, runs, n_classes, config, **kwargs)


def test_a_user_error_in_a_worker_is_raised_as_itself(iemocap, tmp_path, any_work):
    study = Study(small_study(iemocap, tmp_path, heads=("mean_pool", "mlp_pool"), seeds=1, workers=2), tmp_path / "failing",
                  trainer=_failing_trainer)  # fmt: skip
    with pytest.raises(BudgetError, match="^mlp_pool: this input cannot be trained"):
        study.run(log=lambda _: None)


def test_a_worker_killed_is_one_error_that_names_the_setting(iemocap, tmp_path, any_work):
    study = Study(small_study(iemocap, tmp_path, heads=("mean_pool", "mlp_pool"), seeds=1, workers=2), tmp_path / "dying",
                  trainer=_dying_trainer)  # fmt: skip
    with pytest.raises(BudgetError, match=r"a training worker stopped \(exit code -9, killed: most likely out of memory\)"
                       r".*--workers 1"):  # fmt: skip
        study.run(log=lambda _: None)


def test_workers_asked_for_are_taken_and_unset_follow_threads_and_memory_and_the_evaluation_batch_fits_the_rest(
        monkeypatch):  # fmt: skip
    """Workers as asked, else one per thread as many as the memory left fits (each a process of PROCESS_BYTES with
    the least training needs, and one process they fork from); the evaluation batch takes what is left, up to the
    engine's bound; too little for one process is one error, naming fewer workers where there are several."""
    import torch

    from budget.engine.adam import EVAL_VALUES
    from budget.study.memory import PROCESS_BYTES, least_training_bytes, plan_training

    cpu, heads, mb = TrainConfig(device="cpu", bf16=False), ["mlp_pool"], 2**20
    least = least_training_bytes(heads, cpu)
    assert least == (32 + 64) * mb  # a chunk's activations and the least evaluation batch
    assert plan_training(heads, cpu, 100 * 2**30, 3) == MemoryPlan(workers=3)  # room for the engine's bound
    monkeypatch.setattr(torch, "get_num_threads", lambda: 8)
    assert plan_training(heads, cpu, 100 * 2**30, None) == MemoryPlan(workers=8)
    assert plan_training(heads, cpu, None, None) == MemoryPlan(workers=1)  # memory unknown: one, at the bound
    two = PROCESS_BYTES + 2 * (PROCESS_BYTES + least)
    assert plan_training(heads, cpu, two, None) == MemoryPlan(workers=2, eval_mb=64)  # the least batch each
    assert plan_training(heads, cpu, two + 2 * mb, None) == MemoryPlan(workers=2, eval_mb=65)
    assert plan_training(heads, cpu, PROCESS_BYTES // 2, None) == MemoryPlan(workers=1, eval_mb=(PROCESS_BYTES // 2) // mb - 32)
    evaluation = EVAL_VALUES * 8  # float32 frames and their float32 product copy
    assert plan_training(heads, cpu, 32 * mb + evaluation, 1) == MemoryPlan(workers=1)
    assert plan_training(["logreg"], cpu, 32 * mb, 1) == MemoryPlan(workers=1)  # nothing gathered to evaluate
    with pytest.raises(BudgetError, match=r"training in 1 process needs at least 0.09 GB beside the features, more than "
                                          r"the 0.09 GB they leave \(available now\): give each chunk less"):  # fmt: skip
        plan_training(heads, cpu, least - 1, None)
    with pytest.raises(BudgetError, match=r"training in 4 processes needs at least .* \(--workers 1\)"):
        plan_training(heads, cpu, two, 4)
    with pytest.raises(BudgetError, match="workers"):
        StudyConfig(workers=0)


def test_makespan_gives_each_chunk_to_the_first_free_worker_longest_first():
    assert makespan([3, 3, 2, 2, 2], 2) == 7  # 3+2+2 and 3+2
    assert makespan([64, 32], 2) == 64  # one long chunk: no sharing shortens it
    assert makespan([1, 1, 1], 1) == 3
    assert makespan([5], 2, busy=[4, 1]) == 6  # after the chunks in training
    assert makespan([], 3) == 0


def test_the_time_left_with_workers_side_by_side_is_the_longest_worker_s():
    now = [0.0]
    job = SimpleNamespace(name="lld", head="mlp_pool")
    chunks = [Chunk(job, runs=[None], estimate=seconds, units=1) for seconds in (4.0, 2.0, 2.0, 2.0)]
    tracker = Tracker([Work("results", TrainConfig(), chunks, side_by_side=2)], clock=lambda: now[0], side_by_side=2)
    assert tracker.remaining() == 6.0  # 4 | 2 + 2 + 2
    for chunk in chunks[:2]:
        tracker.start(chunk)
    now[0] = 2.0
    tracker.finished(chunks[1], 2.0)  # at its price; the 4 s chunk half done by the clock
    tracker.advance(chunks[0], 0.5)
    assert tracker.remaining() == pytest.approx(4.0)  # 2 left of the long one | 2 + 2


def test_workers_beside_other_busy_processes_are_priced_slower_by_the_crowding(monkeypatch):
    monkeypatch.setattr(execute, "_cpus", lambda: 2)
    assert execute.crowding(1, 0.0) == execute.crowding(2, 0.0) == 1.0  # they fit: as fast as a probe alone
    assert execute.crowding(2, 1.0) / execute.crowding(1, 1.0) == 1.5  # two workers and a burner on two CPUs
    assert execute.crowding(4, 0.0) == 2.0


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="CPU use elsewhere is read from Linux's /proc/stat")
def test_cpu_use_elsewhere_sees_a_busy_process_beside_this_one():
    import subprocess
    import sys
    import time

    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        with execute.cpu_elsewhere() as elsewhere:
            time.sleep(0.7)
    finally:
        burner.kill()
    assert elsewhere() > 0.6  # about one CPU's worth


FAULTS = """
import resource, torch
from budget.engine.device import keep_freed_memory
def step():
    kept = [torch.ones(2**20) for _ in range(4)]  # a step's activations: a few MB, freed together
    del kept
def faults():
    for _ in range(3):
        step()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(50):
        step()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
import ctypes
ctypes.CDLL("libc.so.6").mallopt(-3, 128 * 1024)  # glibc's starting threshold (which it raises as blocks are freed)
default = faults()
assert keep_freed_memory()
print(default, faults())
"""


@pytest.mark.skipif(os.uname().sysname != "Linux", reason="glibc's allocator, as the workers tune it")
def test_a_worker_s_allocator_keeps_a_step_s_freed_memory_instead_of_faulting_it_in_again():
    import subprocess
    import sys

    output = subprocess.run([sys.executable, "-c", FAULTS], check=True, capture_output=True, text=True).stdout
    default, kept = map(int, output.split())
    assert default > 50 * 1000  # from glibc's starting threshold: a step's 16 MB faulted in again, each step
    assert kept < default / 20
