"""The Python API (``budget.curve``, ``budget.compare``, ``budget.load``): what it accepts, and one error per mistake."""

from __future__ import annotations

from pathlib import Path

import pytest
from corpus_builders import build_iemocap

import budget
from budget.errors import BudgetError


@pytest.fixture(scope="module")
def iemocap(tmp_path_factory) -> Path:
    return build_iemocap(tmp_path_factory.mktemp("iemocap"))


@pytest.fixture(scope="module")
def finished(iemocap, tmp_path_factory) -> budget.StudyResult:
    """A small finished study, run with every path given as a ``Path``."""
    folder = tmp_path_factory.mktemp("api")
    return budget.curve(root=iemocap, corpus="iemocap", features="lld", heads="logreg", per_class=[1, 2], seeds=1,
                        store=folder / "store", run_dir=folder / "run", check_convergence=False, log=lambda _: None)  # fmt: skip


def test_paths_are_str_or_path_alike(finished):
    assert finished.path.name == "run" and len(finished.results) == 10
    assert budget.load(finished.path).results.equals(budget.load(str(finished.path)).results)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda iemocap: budget.curve(root=iemocap, corpus="iemocap", run_dir=3), "run_dir must be a path .* got 3"),
        (lambda iemocap: budget.curve(root=3.5, corpus="iemocap"), "root must be a path .* got 3.5"),
        (lambda iemocap: budget.curve(root=iemocap, corpus="iemocap", store=["a"]), r"store must be a path .* got \['a'\]"),
        (lambda iemocap: budget.load(None), "run_dir must be a path .* got None"),
    ],
)  # fmt: skip
def test_a_wrong_type_is_a_budget_error_naming_the_argument(iemocap, call, message):
    with pytest.raises(BudgetError, match=message):
        call(iemocap)


@pytest.mark.parametrize("target", ["0.7", None, 1.5, float("nan")])
def test_a_plan_s_target_is_a_ua_between_0_and_1(finished, target):
    with pytest.raises(BudgetError, match="target"):
        finished.plan(target)
