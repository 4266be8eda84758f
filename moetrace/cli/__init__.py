"""Command-line interface: one module per command, registered on one click group."""

from moetrace.cli import (  # noqa: F401  (registers the commands, in the order --help lists)
    record,
    info,
    analyze,
    predict,
    report,
    plan,
    watch,
    convert,
)
from moetrace.cli.app import app, console


def main() -> None:
    """Entry point of the ``moetrace`` console script."""
    app(prog_name="moetrace")


__all__ = ["app", "console", "main"]
