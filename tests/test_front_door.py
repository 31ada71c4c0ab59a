"""One front door: the CLI parses its options and calls the Python API, so both give the same study; run folders
written before sizes were typed still open and resume."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from corpus_builders import build_iemocap
from typer.testing import CliRunner

import budget
import budget.api as api
from budget.cli import app
from budget.engine.config import TrainConfig
from budget.registry import ACOUSTIC_HEADS
from budget.registry import train as train_head
from budget.sampling import FULL
from budget.study import Study, StudyConfig

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted((REPO / "experiments").glob("*.toml"))
#: A study run by the code at commit bce6a95 (sizes stored as text), with its feature store: the fixture's make-up is in
#: docs/development.md.
OLD_RUN = Path(__file__).parent / "fixtures" / "run-bce6a95"


class Started(Exception):
    """Raised where a study would start training: the test has seen what it needs."""


@pytest.fixture
def studies_seen(monkeypatch) -> list[tuple[str, str, Path, StudyConfig]]:
    """Every study either door starts, as (command, settings digest, run folder, configuration), stopped before it
    trains."""
    seen = []

    def record(command, config, run_dir, check, strict, log):
        folder = Path(run_dir) if run_dir is not None else api.default_run_dir(command, config)
        seen.append((command, config.digest(), folder, config))
        raise Started

    monkeypatch.setattr(api, "_run", record)
    return seen


def _cli(*args: str) -> None:
    result = CliRunner().invoke(app, [*args, "--no-report"])
    assert isinstance(result.exception, Started), result.output


def _api(command: str, **settings) -> None:
    with pytest.raises(Started):
        getattr(budget, command)(**settings)


def _command(path: Path) -> str:
    """The command an experiment's header comment runs it with."""
    return re.search(r"^# budget (curve|compare|acquire)", path.read_text(), re.M).group(1)


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.name)
def test_every_experiment_is_the_same_study_through_the_cli_and_the_api(path, studies_seen):
    command = _command(path)
    _cli(command, "--config", str(path))
    _api(command, config=path)
    (cli_command, cli_digest, cli_folder, cli_config), (_, api_digest, api_folder, api_config) = studies_seen
    assert (cli_digest, cli_folder) == (api_digest, api_folder) and cli_command == command
    assert cli_config == api_config
    assert api_config.heads == type(api_config).from_toml(path).heads  # the file's heads, not a default


def test_the_commands_heads_hold_only_where_neither_the_file_nor_the_call_names_some(tmp_path, studies_seen):
    toml = tmp_path / "study.toml"
    toml.write_text('features = ["lld"]\nn = [200]\n')
    _api("curve", config=toml)
    _api("compare", config=toml)
    _api("compare", config=toml, heads="logreg,mean_pool")
    _api("acquire", config=toml)
    assert [config.heads for *_, config in studies_seen] == [("mlp_pool",), ACOUSTIC_HEADS, ("logreg", "mean_pool"),
                                                             ("mean_pool",)]  # fmt: skip


def test_options_typed_repeated_or_comma_separated_and_api_keywords_make_one_config(studies_seen):
    for options in (["-f", "lld", "-f", "hf:some/model", "--per-class", "5", "--per-class", "10,full", "-m", "logreg"],
                    ["--features", "lld,hf:some/model", "--per-class", "5,10,full", "--heads", "logreg"],
                    ["-f", "lld,hf:some/model", "--per-class", "5,10,full", "--model", "logreg"]):  # fmt: skip
        _cli("curve", *options)
    _api("curve", features=["lld", "hf:some/model"], per_class=[5, 10, "full"], heads=["logreg"])
    configs = [config for *_, config in studies_seen]
    assert all(config == configs[0] for config in configs) and configs[0].per_class == (5, 10, FULL)


def test_a_run_folder_written_before_sizes_were_typed_opens_reports_and_plans(tmp_path):
    result = budget.load(OLD_RUN / "run")
    assert set(result.results["size"]) == {1, 2, FULL} and sorted(result.results["size"])[-1] is FULL
    assert list(result.summary["size"]) == [1, 2, FULL, 1, 2, FULL]
    assert len(result.convergence) == 3  # mean_pool's ends and full, read from the old convergence table
    assert result.report(tmp_path / "report").is_file()
    assert "Recommended" in result.recommendation()


def test_a_run_folder_written_before_sizes_were_typed_resumes_without_training(tmp_path):
    shutil.copytree(OLD_RUN, tmp_path / "old")
    root = build_iemocap(tmp_path / "iemocap")  # the same audio, elsewhere: neither root nor store is in the digest
    trained = []

    def trainer(head, *args, **kwargs):
        trained.append(head)
        return train_head(head, *args, **kwargs)

    config = StudyConfig(corpus="iemocap", root=root, features=("lld",), heads=("logreg", "mean_pool"),
                         per_class=(1, 2, "full"), seeds=1, store=tmp_path / "old" / "store",
                         train=TrainConfig(steps=20, lr=1e-2, batch_size=4, device="cpu"))  # fmt: skip
    before = budget.load(OLD_RUN / "run").results
    results = Study(config, tmp_path / "old" / "run", trainer).run(log=lambda _: None, check_convergence="ends")
    assert trained == []
    assert (results["budget"] == 1).all()  # the old check moved no cell by more than its noise
    assert results.drop(columns=["size", "budget"]).equals(before.drop(columns="size"))
    assert list(results["size"]) == list(before["size"])
