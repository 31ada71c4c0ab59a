"""``budget corpus list | info | fetch``: the corpora, their counts and ceilings, and the one free download."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pandas as pd
import typer
from rich.table import Table

from budget.cli.common import corpus_app, err, out, user_errors
from budget.cli.options import with_settings
from budget.corpora import CORPORA, data_dir, find_root, get_adapter
from budget.folds import assign_folds, fold_names
from budget.sampling import corpus_ceiling


@corpus_app.command("list")
@user_errors
def corpus_list() -> None:
    """List the corpus adapters and where each one is looked for."""
    table = Table("corpus", "default classes", "fetchable", "looked for at", "description")
    for adapter in CORPORA.values():
        table.add_row(
            adapter.name,
            adapter.default_classes,
            "yes" if adapter.url else "no",
            str(data_dir() / adapter.name),
            adapter.description,
        )
    out.print(table)


@corpus_app.command("info")
@user_errors
@with_settings("corpus", "root", "classes", "n_folds", "max_seconds", run=("strict",))
def corpus_info(
    settings: dict,
    save_manifest: Annotated[
        Path | None, typer.Option("--save-manifest", help="Also write the manifest (usable files) to this CSV.")
    ] = None,
    strict: bool = False,
) -> None:
    """Counts per class and group, duration, bad files and files worth a look, and the largest balanced size."""
    from budget.study import StudyConfig, scan_corpus

    config = StudyConfig().with_overrides(**settings)
    usable = scan_corpus(config, lambda line: err.print(line, soft_wrap=True), strict, listed=None).usable
    folds = assign_folds(usable, config.n_folds)
    names = fold_names(usable, folds)
    ceiling = corpus_ceiling(usable, folds)
    classes_present = list(ceiling.counts.columns)

    n_groups = usable["group"].nunique()
    scheme = "leave-one-group-out" if folds.nunique() == n_groups else f"{folds.nunique()} speaker-grouped folds"
    hours = usable["duration"].sum() / 3600
    out.print(f"[bold]{get_adapter(config.corpus).name}[/] at {find_root(config.corpus, config.root)}")
    out.print(
        f"{len(usable)} utterances, {len(classes_present)} classes, {usable['speaker'].nunique()} speakers, "
        f"{n_groups} groups ({scheme}), {hours:.2f} h of audio "
        f"(mean {usable['duration'].mean():.2f} s, max {usable['duration'].max():.2f} s)"
    )

    by_group = pd.crosstab(usable["group"], usable["label"]).reindex(columns=classes_present, fill_value=0)
    table = Table("group", *classes_present, "total", title="utterances per group and class")
    for group, row in by_group.iterrows():
        table.add_row(str(group), *(str(v) for v in row), str(row.sum()))
    totals = by_group.sum()
    table.add_row("[bold]all[/]", *(f"[bold]{v}[/]" for v in totals), f"[bold]{totals.sum()}[/]")
    out.print(table)

    out.print(
        f"largest class-balanced training size every fold can supply: [bold]{ceiling.per_class} per class[/] "
        f"({ceiling.per_class * len(classes_present)} in total); limited by class {ceiling.label!r} when "
        f"{names[ceiling.fold]!r} is held out"
    )
    if save_manifest is not None:
        usable.assign(fold=folds).to_csv(save_manifest, index=False)
        out.print(f"manifest written to {save_manifest}")


@corpus_app.command("fetch")
@user_errors
def corpus_fetch(
    name: Annotated[str, typer.Argument(help="Corpus to download (only emodb is free to redistribute).")],
    dest: Annotated[Path | None, typer.Option("--dest", help="Data folder to unpack into.")] = None,
    url: Annotated[str | None, typer.Option("--url", help="A mirror instead of the official address.")] = None,
    sha256: Annotated[str | None, typer.Option("--sha256", help="Expected sha256 of the archive.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Download again even if a copy is there.")] = False,
) -> None:
    """Download a corpus from its authors' address, check it, and unpack it into the data folder."""
    from budget.corpora.fetch import fetch_corpus

    target = fetch_corpus(name, dest=dest, url=url, sha256=sha256, force=force)
    out.print(f"{get_adapter(name).name} is at {target}")
