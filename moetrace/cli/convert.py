"""`moetrace convert TRACE -o OUT.parquet`: rewrite a trace layer-major for fast layer reads."""

from __future__ import annotations

from pathlib import Path

import click

from moetrace.cli.app import command, console
from moetrace.cli.options import PathType, output_options, trace_argument
from moetrace.cli.progress import progress_bar
from moetrace.cli.record import _parquet_file
from moetrace.cli.render import emit_json, safe
from moetrace.output import check_outputs


@command()
@trace_argument
@click.option("-o", "--out", type=PathType, metavar="OUT", required=True,
              help="The converted trace: one .parquet file.")
@output_options
def convert(trace: str, out: Path, as_json: bool, json_out: Path | None, force: bool) -> None:
    """Rewrite a trace layer-major (ranks summed, a row group per layer and block of steps), so
    that work on a few layers at a time reads only their bytes. See docs/scaling.md."""
    from moetrace.scale.convert import convert_trace

    _parquet_file(out)
    if json_out is not None:  # all outputs together, before any work (the library checks -o)
        check_outputs([(out, "file"), (json_out, "file")], inputs=[trace], force=force)
    with progress_bar("converting", quiet=as_json):
        written = convert_trace(trace, out, force=force)
    if not as_json:
        console.print(f"wrote layer-major trace [bold]{safe(written.path)}[/]", soft_wrap=True)
    if as_json or json_out is not None:
        doc = {"schema": "moetrace.convert", "version": 1, "source": trace,
               **written.to_json()}
        emit_json(doc, to_stdout=as_json, path=json_out, inputs=[trace], force=force)
