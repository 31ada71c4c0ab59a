"""``budget extract`` and ``budget features``: filling the feature store and listing what it holds."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from budget.cli.common import app, err, out, user_errors
from budget.cli.options import with_settings


@app.command("extract")
@user_errors
@with_settings("features", "corpus", "root", "classes", "store", "device", "precision", "max_seconds", "frame_dtype",
               "file_identity", "extract_batch", "executor", run=("config", "strict"))  # fmt: skip
def extract(settings: dict, config: Path | None = None, strict: bool = False) -> None:
    """Extract features for a corpus into the feature store (only what it does not hold yet), under the settings a
    study with the same options reads them with."""
    from budget.api import extract as run_extract

    reports = run_extract(config=config, strict=strict, log=lambda line: err.print(line, soft_wrap=True), **settings)
    for report in reports:
        speed = (
            f" in {report.seconds:.1f} s: {report.utterances_per_second:.1f} utt/s, real-time factor {report.real_time_factor:.4f}"
            if report.extracted
            else ""
        )
        out.print(
            f"[bold]{report.spec}[/] ({report.device}, {report.precision}): {report.requested} utterances, "
            f"{report.cached} already stored, {report.extracted} extracted{speed}; {len(report.failures)} failed",
            soft_wrap=True,
        )
        for row in report.failures.itertuples():
            err.print(f"  {row.utt_id}: {row.reason}", soft_wrap=True)
    if reports:
        out.print(f"features stored in {reports[0].entry.parent}", soft_wrap=True)


@app.command("features")
@user_errors
@with_settings("store", run=())
def features_list(settings: dict) -> None:
    """List what the feature store holds: extractor, dimensions, frames, size on disk, failures."""
    from budget.features import FeatureStore

    feature_store = FeatureStore(settings.get("store"))
    summary = feature_store.summary()
    if summary.empty:
        out.print(f"the feature store at {feature_store.root} is empty; fill it with `budget extract`")
        return
    table = Table("features", "frame", "layers", "crop s", "utterances", "frames", "MB", "failed", "files known by",
                  title=f"feature store {feature_store.root}")  # fmt: skip
    for row in summary.itertuples():
        table.add_row(
            row.spec, row.frame_shape, str(row.layers), str(row.max_seconds or "none"),
            str(row.utterances), str(row.frames), f"{row.size_mb:.1f}", str(row.failures),
            {"content": "content", "stat": "path, size, date"}.get(row.identity, row.identity),
        )  # fmt: skip
    out.print(table)
    for row in summary[summary["failures"] > 0].itertuples():
        err.print(f"[bold yellow]{row.spec}: {row.failures} failed utterance(s):[/]")
        for failure in feature_store.failures(row.entry).itertuples():
            err.print(f"  {failure.utt_id}: {failure.reason}", soft_wrap=True)
