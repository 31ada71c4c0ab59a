"""What every command shares: the app, its consoles, one-line errors and the options several commands take."""

from __future__ import annotations

import functools
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

try:  # typer 0.29 and later carry their own click, whose errors all derive from TyperException
    from typer import TyperException as CommandLineError
except ImportError:  # earlier typer uses click itself
    from click import ClickException as CommandLineError

from budget.errors import BudgetError


class _Commands(TyperGroup):
    """The command group; a mistake in the command line itself (an unknown option, a missing value) is one
    ``error:`` line and status 2, as every other mistake is, not the CLI library's boxed usage text."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except CommandLineError as error:
            if type(error).__name__ == "NoArgsIsHelpError":  # `budget` alone: the help text, as --help prints it
                error.show()
            else:
                context = getattr(error, "ctx", None)
                hint = f"; see `{context.command_path} --help`" if context is not None else ""
                err.print(f"[bold red]error:[/] {escape(error.format_message().rstrip('.'))}{hint}", soft_wrap=True)
            code = error.exit_code
        except typer.Abort:
            err.print("aborted")
            code = 1
        if not standalone_mode:
            return code
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    cls=_Commands,
    help="How many labelled examples does a speech emotion recognition model need?",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
corpus_app = typer.Typer(help="Inspect and fetch corpora.", no_args_is_help=True)
app.add_typer(corpus_app, name="corpus")

#: Columns of output that goes to a pipe or a file: wide enough that no identifier (a model path, a group name) is cut.
PIPED_WIDTH = 400


def _console(stderr: bool = False) -> Console:
    """A terminal gets its own width; a pipe or file gets :data:`PIPED_WIDTH`, not rich's 80 columns."""
    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, highlight=False, width=None if stream.isatty() else PIPED_WIDTH)


out = _console()
err = _console(stderr=True)


def user_errors(command):
    """Print a :class:`BudgetError` as one line and exit 2, instead of a traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except BudgetError as error:
            err.print(f"[bold red]error:[/] {escape(str(error))}", soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper


TargetOption = Annotated[float | None, typer.Option("--target", help="Target UA for the plan, e.g. 0.65.")]
