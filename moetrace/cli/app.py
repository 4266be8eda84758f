"""The typer application, and the one place where library errors become exit codes.

Every command is registered with :func:`command`, which runs its body under that mapping:
bad input or options (:class:`MoetraceError`) exit 2 with one line, anything unexpected is
an internal error (exit 1, one line; ``MOETRACE_DEBUG=1`` shows the traceback). Usage
errors (an unknown option, a missing argument) never reach it: the command-line parser
reports them with the command's usage line and exits 2, as every click program does.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable

import typer
from rich.console import Console

from moetrace import __version__
from moetrace.display import printable
from moetrace.errors import MoetraceError

#: Terminal output of every command. Lines are not wrapped (soft_wrap), so a path printed for
#: the user stays whole and copyable at any terminal width; tables still fit the width.
#: Text from traces (paths, model names, metadata) goes through ``safe`` (cli/render.py).
console = Console(highlight=False, soft_wrap=True)


def fail(message: str, code: int) -> None:
    """One line on stderr, then exit with ``code``."""
    sys.stderr.write(f"moetrace: error: {printable(' '.join(message.split()))}\n")
    raise SystemExit(code)


def warn(message: str) -> None:
    """One note line on stderr (the command goes on)."""
    sys.stderr.write(f"moetrace: note: {printable(' '.join(message.split()))}\n")


def _click_style_help() -> None:
    """Help in click's conventions: a required argument as ``TRACE`` (not ``{TRACE}``) in the
    usage line, no type shown for a flag (not ``<bool>``), and an option's metavar or click's
    type name (``INTEGER``, ``TEXT``) otherwise (not ``<int>``). typer draws these in
    ``TyperArgument``/``TyperOption``; where a typer version lacks the hooks, its own style
    stays."""
    from typer import core

    argument, option = getattr(core, "TyperArgument", None), getattr(core, "TyperOption", None)
    if argument is not None and hasattr(argument, "_usage_display_name"):
        def usage_name(self) -> str:
            name = self.display_name_raw
            name = name if self.required else f"[{name}]"
            return name + ("..." if self.nargs != 1 else "")

        argument._usage_display_name = usage_name
    names = {"int": "INTEGER", "str": "TEXT", "float": "FLOAT", "Path": "PATH", "bool": None}
    if argument is not None and hasattr(argument, "display_type_rich"):
        argument.display_type_rich = lambda self, ctx: None  # the name column says it
    if option is not None and hasattr(option, "display_type_rich"):
        typer_style = option.display_type_rich

        def display_type(self, ctx) -> str | None:
            if self.metavar is not None:
                return self.metavar
            if getattr(self, "is_flag", False):
                return None
            label = typer_style(self, ctx)
            bare = label.strip("<>") if isinstance(label, str) else label
            return names.get(bare, label) if isinstance(bare, str) else label

        option.display_type_rich = display_type


_click_style_help()

app = typer.Typer(
    name="moetrace",
    help="Record, analyze and forecast per-expert token loads of Mixture-of-Experts training.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def command(**settings) -> Callable[[Callable], Callable]:
    """Register ``fn`` as a command whose library errors become exit codes (see module doc)."""
    def register(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def run(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except MoetraceError as exc:
                fail(str(exc), exc.exit_code)
            except KeyboardInterrupt:
                fail("interrupted", 130)
            except (typer.Exit, typer.Abort, SystemExit):
                raise
            except Exception as exc:  # an internal error: say so in one line, exit 1
                if os.environ.get("MOETRACE_DEBUG"):
                    raise
                fail(f"internal error: {type(exc).__name__}: {exc} "
                     "(set MOETRACE_DEBUG=1 for a traceback)", 1)
        return app.command(**settings)(run)
    return register


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


def run() -> None:
    app(prog_name="moetrace")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run())
