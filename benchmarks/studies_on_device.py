"""Run studies on a machine that has neither the corpus nor the feature store (a GPU machine, say).

    python benchmarks/studies_on_device.py export NAME=CONFIG.toml[,key=value...][,check=ends|all] ... --to .gpu_data
    python benchmarks/studies_on_device.py run --from .gpu_data --runs runs

``export`` (here, where the corpus and the store are) scans each study's
corpus and loads its features exactly as ``budget curve``/``compare`` would,
and pickles the result (:class:`budget.study.StudyInputs`) with the study's
configuration.  ``run`` (there) trains each study through the same
``Study.run_inputs`` code on the device (``--device auto``), writes ordinary
run folders under ``--runs``, and packs them into ``$OUT/runs.tar.gz`` when
``$OUT`` is set.  ``budget report`` then works on the run folders anywhere.
"""

from __future__ import annotations

import argparse
import os
import pickle
import tarfile
import time
import tomllib
from dataclasses import replace
from pathlib import Path

from budget.study import Study, StudyConfig


def parse_study(text: str) -> tuple[str, StudyConfig, str]:
    """``NAME=CONFIG.toml[,key=value...]`` (``check=ends|all|none`` among the keys) to a name, config, check.

    Values read as in TOML (``seeds=1`` an integer), ``;`` standing for a list's commas (``heads=mean_pool;logreg``).
    """
    name, rest = text.split("=", 1)
    path, *overrides = rest.split(",")
    values = dict(item.split("=", 1) for item in overrides)
    check = values.pop("check", "none")
    config = StudyConfig.from_toml(path).with_overrides(**{k: _value(v.replace(";", ",")) for k, v in values.items()})
    return name, config, check


def _value(text: str) -> object:
    """A setting as a TOML file would give it (``1`` an integer, ``0.5`` a float, ``true`` a boolean), else the text."""
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text


def export(studies: list[str], folder: Path) -> None:
    """One pickle for all studies, so feature sets they share travel once."""
    folder.mkdir(parents=True, exist_ok=True)
    shared: dict[str, object] = {}
    saved = []
    for text in studies:
        name, config, check = parse_study(text)
        inputs = Study(replace(config, train=replace(config.train, device="cpu")), folder / "unused").load_inputs()
        for spec, features in inputs.features.items():
            first = shared.setdefault(spec, features)
            if first.frames is None and features.frames is not None:  # a study of pooled heads loaded no frames
                first = shared[spec] = features
            if list(first.utt_ids) == list(features.utt_ids):
                inputs.features[spec] = first
        saved.append({"name": name, "config": config, "check": check, "inputs": inputs})
        print(f"{name}: {len(inputs.data.manifest)} utterances, features {', '.join(inputs.features)}")
    with (folder / "studies.pkl").open("wb") as handle:
        pickle.dump(saved, handle)


def run(folder: Path, runs: Path, device: str) -> None:
    with (folder / "studies.pkl").open("rb") as handle:
        saved = pickle.load(handle)
    done = []
    for item in saved:
        config: StudyConfig = item["config"]
        study = Study(replace(config, train=replace(config.train, device=device)), runs / item["name"])
        started = time.perf_counter()
        study.run_inputs(item["inputs"], log=print, check_convergence=item["check"])
        print(f"{item['name']}: {time.perf_counter() - started:.1f} s on {study.config.train.device}")
        done.append(study.run_dir)
        if os.environ.get("OUT"):  # after every study, so a time-out keeps what finished
            with tarfile.open(Path(os.environ["OUT"]) / "runs.tar.gz", "w:gz") as archive:
                for run_dir in done:
                    for file in sorted(run_dir.glob("*.*")):
                        archive.add(file, arcname=f"{run_dir.name}/{file.name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    out = commands.add_parser("export")
    out.add_argument("studies", nargs="+")
    out.add_argument("--to", type=Path, default=Path(".gpu_data"))
    back = commands.add_parser("run")
    back.add_argument("--from", dest="source", type=Path, default=Path(".gpu_data"))
    back.add_argument("--runs", type=Path, default=Path("runs"))
    back.add_argument("--device", default="auto")
    args = parser.parse_args()
    if args.command == "export":
        export(args.studies, args.to)
    else:
        run(args.source, args.runs, args.device)


if __name__ == "__main__":
    main()
