"""How a setting appears on the command line, declared beside the setting itself.

A field of :class:`budget.study.StudyConfig` or :class:`budget.engine.config.TrainConfig`
with ``metadata=option(...)`` is a TOML key and a keyword of the Python API under
its own name, and a command-line option of every command that takes it, built
from that one declaration (:mod:`budget.cli.options`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CommandLine:
    """A setting's command-line form: its flag, a short form, other spellings it answers to, and its help."""

    flag: str
    help: str
    short: str | None = None
    aliases: tuple[str, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        return (self.flag, *self.aliases, *([self.short] if self.short else []))


def option(flag: str, help: str, short: str | None = None, aliases: tuple[str, ...] = ()) -> dict:
    """Field metadata: the setting's command-line form."""
    return {"cli": CommandLine(flag, help, short, aliases)}


def cli_form(metadata) -> CommandLine | None:
    """A field's command-line form, or None for a setting only a config file sets."""
    return metadata.get("cli")
