"""``convert``: rewrite a trace so that reading a few layers reads only their bytes.

A trace written step by step (most loggers, and moetrace before 0.2) keeps every layer in
every row group, so reading one chunk of layers scans the whole file. The converted file holds
the same counts (ranks summed) in layer-major order, each row group one layer's rows for a
block of steps: the reader's filter on layers skips every other row group by its statistics.
Written a chunk of layers at a time (bounded memory), atomically, with page checksums; the
metadata is kept, with ``extra.layout = "layer-major"``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from moetrace.output import check_output
from moetrace.scale.chunks import layer_chunks
from moetrace.trace.read import read_trace
from moetrace.trace.write import TraceWriter, write_layer_groups
from moetrace.written import WrittenTrace


def convert_trace(src: str | Path, out: str | Path, *, force: bool = False,
                  memory: int | None = None) -> WrittenTrace:
    """Rewrite the trace at ``src`` layer-major into the single file ``out``; say what was
    written (its path, dimensions and steps, rows and bytes)."""
    out = Path(out)
    check_output(out, kind="file", inputs=[src], force=force)
    trace = read_trace(src)
    metadata = replace(trace.metadata, extra={**trace.metadata.extra, "layout": "layer-major"})
    with TraceWriter(out, metadata, force=force, inputs=[src]) as writer:
        for chunk in layer_chunks(trace.n_layers, trace.n_steps, trace.n_experts, "analyze",
                                  memory):
            loads = trace.loads(layers=chunk)
            write_layer_groups(writer, loads.steps, loads.layers, loads.counts)
    return WrittenTrace.of(trace, path=out, files=[out])
