"""One error hierarchy for the whole library; the CLI maps it to exit codes in one place.

Every subclass of :class:`MoetraceError` means "the user gave us something we cannot use"
and exits with code 2; anything else escaping the library is an internal error (exit 1).
Messages carry the file, layer, expert or step at fault so one line says it all.
"""

from __future__ import annotations

from pathlib import Path


def first_line(exc: BaseException) -> str:
    """The first line of a foreign library's error, to quote inside our one-line messages."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class MoetraceError(Exception):
    """Bad input or a bad request: one line for the user, exit code 2."""

    exit_code = 2

    def __init__(self, message: str, *, path: str | Path | None = None):
        self.path = str(path) if path is not None else None
        super().__init__(f"{self.path}: {message}" if self.path else message)


class TraceError(MoetraceError):
    """A trace file or directory that cannot be read as a valid moetrace trace."""


class ParameterError(MoetraceError):
    """An option or argument out of range, or inconsistent with the data it applies to."""


class MissingExtraError(MoetraceError):
    """An optional dependency is needed; the message names the extra to install."""

    def __init__(self, package: str, extra: str, purpose: str):
        super().__init__(
            f"{purpose} needs {package}, which is not installed: "
            f"pip install 'moetrace[{extra}]'"
        )


class OutputError(MoetraceError):
    """An output the output policy refuses (docs/cli.md, "Outputs")."""


class OutputExistsError(OutputError):
    """An output that exists already and would be overwritten without --force."""


class InternalError(Exception):
    """A bug of moetrace (a predictor that breaks its contract, say): not the user's input,
    so it is not a MoetraceError; the CLI reports it as an internal error (exit 1)."""
