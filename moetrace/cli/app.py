"""The typer application and the one place where library errors become exit codes."""

from __future__ import annotations

import os
import sys

import click
import typer
from rich.console import Console
from typer.core import TyperGroup

from moetrace import __version__
from moetrace.errors import MoetraceError

#: Terminal output of every command. Lines are not wrapped (soft_wrap), so a path printed for
#: the user stays whole and copyable at any terminal width; tables still fit the width.
console = Console(highlight=False, soft_wrap=True)


def _fail(message: str, code: int) -> None:
    click.echo(f"moetrace: error: {' '.join(message.split())}", err=True)
    raise SystemExit(code)


class _Group(TyperGroup):
    """Maps errors to exit codes: bad input (MoetraceError) 2, anything unexpected 1."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except MoetraceError as exc:
            _fail(str(exc), exc.exit_code)
        except (typer.Exit, click.exceptions.Exit, click.ClickException, click.Abort, SystemExit):
            raise
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except Exception as exc:  # an internal error: say so in one line, exit 1
            if os.environ.get("MOETRACE_DEBUG"):
                raise
            _fail(f"internal error: {type(exc).__name__}: {exc} "
                  "(set MOETRACE_DEBUG=1 for a traceback)", 1)


app = typer.Typer(
    cls=_Group,
    name="moetrace",
    help="Record, analyze and forecast per-expert token loads of Mixture-of-Experts training.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"moetrace {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Show the version and exit."),
) -> None:
    """Record, analyze and forecast per-expert token loads of Mixture-of-Experts training."""


def not_available(command: str, issue: str) -> None:
    """Placeholder behaviour of a command whose implementation has not landed yet."""
    _fail(f"'{command}' is not available yet ({issue})", 2)


def run() -> None:
    app(prog_name="moetrace")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run())
