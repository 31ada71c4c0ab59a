"""Command-line options built from the settings' own declarations.

Every field of :class:`~budget.study.StudyConfig` and :class:`~budget.engine.config.TrainConfig`
declared with :func:`budget.settings.option` is a command-line option of each
command that takes it, under its flag, with its help, and nothing else is
written per setting.  An option left out is None, so a config file
(``--config``) and then the defaults hold: defaults < TOML < what was typed.
"""

from __future__ import annotations

import functools
import inspect
import typing
from dataclasses import fields
from pathlib import Path
from typing import Annotated

import typer

from budget.engine.config import TrainConfig
from budget.settings import CommandLine, cli_form
from budget.study import StudyConfig


def declared_settings(kind: type[StudyConfig] = StudyConfig) -> dict[str, tuple[type, CommandLine]]:
    """Every setting of ``kind`` (a study's, or an acquisition's) with a command-line form: its key, type and form."""
    settings = {}
    for owner in (kind, TrainConfig):
        hints = typing.get_type_hints(owner)
        for spec in fields(owner):
            if (form := cli_form(spec.metadata)) is not None:
                settings[spec.name] = (hints[spec.name], form)
    return settings


def _option_type(kind) -> object:
    """The command-line type of a setting, always optional: a repeatable list for a tuple (each item may itself be
    comma-separated), the type itself for numbers and flags, text for anything parsed by its owner."""
    args = [arg for arg in typing.get_args(kind) if arg is not type(None)] if typing.get_origin(kind) is not tuple else []
    kind = args[0] if len(args) == 1 else kind
    if typing.get_origin(kind) is tuple:
        return list[str] | None
    return (kind if kind in (int, float, bool, str) else str) | None


#: How a command runs, besides its settings: not TOML keys.
RUN_OPTIONS = {
    "config": (Path | None, typer.Option("--config", help="A study TOML (see experiments/); options override it.")),
    "run_dir": (Path | None, typer.Option("--run-dir", help="Where results go; default runs/<command>-<corpus>-<settings hash>.")),
    "strict": (bool, typer.Option("--strict", help="Stop on any bad, silent or very short audio file instead of leaving it out or noting it.")),
}


def with_settings(*names: str, run: tuple[str, ...] = ("config", "run_dir", "strict"), kind: type[StudyConfig] = StudyConfig):
    """Give a command the options of the named settings of ``kind`` (every declared one when none are named) and the
    named :data:`RUN_OPTIONS`; the command receives the settings typed as one ``settings`` dict (those left out
    absent, a repeated option joined by commas) and each run option by its name."""
    declared = declared_settings(kind)
    chosen = {name: declared[name] for name in (names or declared)}

    def decorate(command):
        own = [p for p in inspect.signature(command, eval_str=True).parameters.values()
               if p.name != "settings" and p.name not in RUN_OPTIONS]  # fmt: skip
        keyword = inspect.Parameter.KEYWORD_ONLY
        added = [inspect.Parameter(key, keyword, default=None, annotation=Annotated[_option_type(kind), typer.Option(
                     *form.names, help=form.help)]) for key, (kind, form) in chosen.items()]  # fmt: skip
        added += [inspect.Parameter(key, keyword, default=False if kind is bool else None, annotation=Annotated[kind, info])
                  for key, (kind, info) in RUN_OPTIONS.items() if key in run]  # fmt: skip

        @functools.wraps(command)
        def wrapper(**values):
            typed = {key: values.pop(key) for key in chosen}
            settings = {key: ",".join(value) if isinstance(value, list) else value
                        for key, value in typed.items() if value is not None and value != []}  # fmt: skip
            return command(settings=settings, **values)

        wrapper.__signature__ = inspect.Signature([p.replace(kind=keyword) for p in own] + added)
        return wrapper

    return decorate
