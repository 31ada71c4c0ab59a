"""How a study setting appears on the command line, declared beside the setting itself.

A field of :class:`budget.study.StudyConfig` or :class:`budget.engine.config.TrainConfig`
with ``metadata=option(...)`` is a TOML key under its own name and a command-line
option of ``budget curve`` and ``budget compare``, built from that one declaration
(:mod:`budget.cli.studies`).
"""

from __future__ import annotations


def option(flag: str, help: str, short: str | None = None) -> dict:
    """Field metadata: the setting's command-line flag (and short form) and its help."""
    return {"cli": (flag, short, help)}


def cli_form(metadata) -> tuple[str, str | None, str] | None:
    """A field's (flag, short, help), or None for a setting only a config file sets."""
    return metadata.get("cli")
