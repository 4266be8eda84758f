"""The click application, and the one place where library errors become exit codes.

Every command is registered with :func:`command`, which runs its body under that mapping:
bad input or options (:class:`MoetraceError`) exit 2 with one line, anything unexpected is
an internal error (exit 1, one line; ``MOETRACE_DEBUG=1`` shows the traceback). Usage
errors (an unknown option, a missing argument) never reach it: click reports them with the
command's usage line and exits 2. Options renamed in this release (``--window`` of analyze,
say) keep working for one release: :func:`renamed` declares the old name, hidden, and the
command's wrapper takes its value with a note on stderr.

Nothing heavy is imported here: ``moetrace --help`` starts no numpy, polars or rich.
"""

from __future__ import annotations

import functools
import os
import sys
import warnings
from collections.abc import Callable
from typing import Any

import click

from moetrace import __version__
from moetrace.display import printable
from moetrace.errors import MoetraceError, ParameterError

#: prefix of the keyword a renamed option's old name is parsed into
_OLD = "_old__"


class _Console:
    """The terminal output of every command, a rich Console made on first use (rich is not
    imported for ``--help``). Prose wraps at the terminal's width and tables fit it (80
    columns in a pipe); a line that names a path is printed with ``soft_wrap=True`` so the
    path stays whole and copyable. Text from traces goes through ``safe`` (cli/render.py)."""

    _console = None

    def __getattr__(self, name: str) -> Any:
        if _Console._console is None:
            from rich.console import Console

            _Console._console = Console(highlight=False)
        return getattr(_Console._console, name)


console = _Console()


def fail(message: str, code: int) -> None:
    """One line on stderr, then exit with ``code``."""
    sys.stderr.write(f"moetrace: error: {printable(' '.join(message.split()))}\n")
    raise SystemExit(code)


def warn(message: str) -> None:
    """One note line on stderr (the command goes on)."""
    sys.stderr.write(f"moetrace: note: {printable(' '.join(message.split()))}\n")


class Group(click.Group):
    """Commands listed in the order they were registered (the order users meet them)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"],
                                          "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="moetrace",
                      message="%(prog)s %(version)s", help="Show the version and exit.")
def app() -> None:
    """Record, analyze and forecast per-expert token loads of Mixture-of-Experts training."""


def renamed(old: str, new: str, **option: Any) -> Callable[[Callable], Callable]:
    """Keep the option name ``old`` working (hidden) for the option now called ``new`` (the
    new flag, e.g. ``--state-window``); its value goes to the new option's parameter, with a
    note saying the new name. Both given: a usage error."""
    dest = _OLD + new.lstrip("-").replace("-", "_")

    def decorate(fn: Callable) -> Callable:
        return click.option(old, dest, hidden=True, **option)(fn)
    decorate.names = (old, new)  # type: ignore[attr-defined]
    return decorate


def _take_renamed(kwargs: dict[str, Any], ctx: click.Context | None) -> None:
    """Move the values of old option names onto the new ones (see :func:`renamed`)."""
    for key in [k for k in kwargs if k.startswith(_OLD)]:
        value = kwargs.pop(key)
        target = key[len(_OLD):]
        if value is None or value is False:
            continue
        new = "--" + target.replace("_", "-")
        old = next((p.opts[0] for p in (ctx.command.params if ctx else [])
                    if p.name == key), key)
        source = ctx.get_parameter_source(target) if ctx is not None else None
        if source is not None and source.name == "COMMANDLINE":
            raise click.UsageError(f"{old} is the old name of {new}: give one of them", ctx)
        warn(f"{old} is now {new}; the old name goes in the next release")
        kwargs[target] = value


def _warnings_shown() -> bool:
    """Library warnings reach the terminal only when asked for (``python -W``, PYTHONWARNINGS
    or MOETRACE_DEBUG): a user's terminal is no place for numpy's or matplotlib's."""
    return bool(sys.warnoptions) or bool(os.environ.get("MOETRACE_DEBUG"))


def command(name: str | None = None, **settings: Any) -> Callable[[Callable], click.Command]:
    """Register ``fn`` as a command whose library errors become exit codes (module doc)."""
    def register(fn: Callable) -> click.Command:
        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            _take_renamed(kwargs, click.get_current_context(silent=True))
            try:
                with warnings.catch_warnings():
                    if not _warnings_shown():  # workers take these filters along
                        warnings.simplefilter("ignore")  # (moetrace.scale.executor)
                    return fn(*args, **kwargs)
            except MoetraceError as exc:
                fail(str(exc), exc.exit_code)
            except KeyboardInterrupt:
                fail("interrupted", 130)
            except (click.exceptions.Exit, click.exceptions.Abort, click.UsageError,
                    SystemExit):
                raise
            except Exception as exc:  # an internal error: say so in one line, exit 1
                if os.environ.get("MOETRACE_DEBUG"):
                    raise
                fail(f"internal error: {type(exc).__name__}: {exc} "
                     "(set MOETRACE_DEBUG=1 for a traceback)", 1)
        return app.command(name, **settings)(run)
    return register


def usage(message: str) -> None:
    """A usage error of the running command (click's line and usage, exit 2)."""
    raise click.UsageError(message, click.get_current_context(silent=True))


__all__ = ["ParameterError", "app", "command", "console", "fail", "renamed", "usage", "warn"]
