"""`moetrace convert TRACE -o OUT.parquet`: rewrite a trace layer-major for fast layer reads."""

from __future__ import annotations

from pathlib import Path

import click

from moetrace.cli.app import command, console
from moetrace.cli.options import PathType, trace_argument
from moetrace.cli.progress import progress_bar
from moetrace.cli.render import safe
from moetrace.errors import ParameterError


@command()
@trace_argument
@click.option("-o", "--out", type=PathType, metavar="OUT", required=True,
              help="The converted trace: one .parquet file.")
@click.option("--force", is_flag=True,
              help="Replace existing outputs (a directory only if moetrace wrote it).")
def convert(trace: str, out: Path, force: bool) -> None:
    """Rewrite a trace layer-major (ranks summed, a row group per layer and block of steps), so
    that work on a few layers at a time reads only their bytes. See docs/scaling.md."""
    from moetrace.scale.convert import convert_trace

    if out.suffix.lower() != ".parquet":
        raise ParameterError(f"{out}: a trace is written as Parquet; name the output *.parquet")
    with progress_bar("converting"):
        path = convert_trace(trace, out, force=force)
    console.print(f"wrote layer-major trace [bold]{safe(path)}[/]", soft_wrap=True)
