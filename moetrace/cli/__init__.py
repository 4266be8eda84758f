"""Command-line interface: one module per command, registered on one typer app."""

from moetrace.cli import analyze, convert, info, plan, predict, record, report, watch  # noqa: F401  (registers commands)
from moetrace.cli.app import app, console


def main() -> None:
    """Entry point of the ``moetrace`` console script."""
    app(prog_name="moetrace")


__all__ = ["app", "console", "main"]
