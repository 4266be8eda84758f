"""`moetrace convert TRACE -o OUT.parquet`: rewrite a trace layer-major for fast layer reads."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from moetrace.cli.app import command, console
from moetrace.cli.options import TraceArg
from moetrace.cli.progress import progress_bar
from moetrace.cli.render import Force, safe
from moetrace.errors import ParameterError


@command()
def convert(
    trace: TraceArg,
    out: Annotated[Path, typer.Option("-o", "--out", metavar="OUT",
                                      help="The converted trace: one .parquet file.")],
    force: Force = False,
) -> None:
    """Rewrite a trace layer-major (ranks summed, a row group per layer and block of steps), so
    that work on a few layers at a time reads only their bytes. See docs/scaling.md."""
    from moetrace.scale.convert import convert_trace

    if out.suffix.lower() != ".parquet":
        raise ParameterError(f"{out}: a trace is written as Parquet; name the output *.parquet")
    with progress_bar("converting"):
        path = convert_trace(trace, out, force=force)
    console.print(f"wrote layer-major trace [bold]{safe(path)}[/]")
