"""`moetrace convert TRACE -o OUT.parquet`: rewrite a trace layer-major for fast layer reads."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from moetrace.cli.app import command, console
from moetrace.cli.options import TraceArg
from moetrace.cli.progress import progress_bar
from moetrace.cli.record import _parquet_file
from moetrace.cli.render import Force, JsonFlag, JsonOut, emit_json, safe
from moetrace.output import check_outputs


@command()
def convert(
    trace: TraceArg,
    out: Annotated[Path, typer.Option("-o", "--out", metavar="OUT",
                                      help="The converted trace: one .parquet file.")],
    as_json: JsonFlag = False,
    json_out: JsonOut = None,
    force: Force = False,
) -> None:
    """Rewrite a trace layer-major (ranks summed, a row group per layer and block of steps), so
    that work on a few layers at a time reads only their bytes. See docs/scaling.md."""
    from moetrace.scale.convert import convert_trace

    _parquet_file(out)
    if json_out is not None:  # all outputs together, before any work (the library checks -o)
        check_outputs([(out, "file"), (json_out, "file")], inputs=[trace], force=force)
    with progress_bar("converting"):
        written = convert_trace(trace, out, force=force)
    if not as_json:
        console.print(f"wrote layer-major trace [bold]{safe(written.path)}[/]")
    if as_json or json_out is not None:
        doc = {"schema": "moetrace.convert", "version": 1, "source": trace,
               **written.to_json()}
        emit_json(doc, to_stdout=as_json, path=json_out, inputs=[trace], force=force)
