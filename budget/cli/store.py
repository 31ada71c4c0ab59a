"""``budget extract`` and ``budget features``: filling the feature store and listing what it holds."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from budget.audio import MAX_SECONDS
from budget.cli.common import (
    ClassesOption,
    CorpusOption,
    DeviceOption,
    MaxSecondsOption,
    RootOption,
    StoreOption,
    app,
    err,
    joined,
    out,
    user_errors,
)
from budget.cli.corpus import usable_manifest


@app.command("extract")
@user_errors
def extract(
    features: Annotated[
        list[str],
        typer.Option(
            "--features", "-f",
            help="Specs, comma-separated or repeated: lld, hf:<model>[:layer|all], wav2vec1:<ckpt.pt>, text:<model>.",
        ),
    ],
    corpus: CorpusOption = "emodb",
    root: RootOption = None,
    classes: ClassesOption = None,
    store: StoreOption = None,
    device: DeviceOption = "auto",
    precision: Annotated[str, typer.Option("--precision", help="Model precision: fp32, bf16 or fp16.")] = "fp32",
    max_seconds: MaxSecondsOption = MAX_SECONDS,
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", help="Utterances per batch (default 16 on CUDA, 8 on CPU).")
    ] = None,
    frame_dtype: Annotated[str, typer.Option("--frame-dtype", help="Stored frames: float16 or float32.")] = "float16",
    strict: Annotated[bool, typer.Option("--strict", help="Fail on any bad audio file instead of skipping it.")] = False,
    file_identity: Annotated[
        str, typer.Option("--identity", "--file-identity", help="Know audio files by content (a hash of their bytes) or stat "
                                     "(path, size, date: no reading, for very large corpora).")
    ] = "content",
    executor: Annotated[
        str, typer.Option("--executor", help="Where batches run: local (this process), ray (a local Ray cluster) or "
                          "ray:ADDRESS (ray:auto joins a running one).")
    ] = "local",
) -> None:
    """Extract features for a corpus into the feature store (only what it does not hold yet)."""
    from budget.execute import require
    from budget.features import FeatureStore, parse_feature_specs
    from budget.features.entries import EntrySettings

    require(executor)  # before any work: Ray installed where asked for
    extractors = [e.configure(device, precision) for e in parse_feature_specs(joined(features))]
    settings = EntrySettings(max_seconds, frame_dtype, file_identity)  # checked before any file is read
    manifest = usable_manifest(corpus, root, classes, strict, settings.max_seconds)
    feature_store = FeatureStore(store)
    reports = feature_store.extract_all(
        extractors, manifest, max_seconds=max_seconds, batch_size=batch_size, frame_dtype=frame_dtype,
        file_identity=file_identity, executor=executor,
    )  # fmt: skip
    for extractor, report in zip(extractors, reports, strict=True):
        speed = (
            f" in {report.seconds:.1f} s: {report.utterances_per_second:.1f} utt/s, real-time factor {report.real_time_factor:.4f}"
            if report.extracted
            else ""
        )
        out.print(
            f"[bold]{extractor.spec}[/] ({extractor.device}, {extractor.precision}): {report.requested} utterances, "
            f"{report.cached} already stored, {report.extracted} extracted{speed}; {len(report.failures)} failed",
            soft_wrap=True,
        )
        for row in report.failures.itertuples():
            err.print(f"  {row.utt_id}: {row.reason}", soft_wrap=True)
    out.print(f"features stored in {feature_store.root}")


@app.command("features")
@user_errors
def features_list(store: StoreOption = None) -> None:
    """List what the feature store holds: extractor, dimensions, frames, size on disk, failures."""
    from budget.features import FeatureStore

    feature_store = FeatureStore(store)
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
