"""From a trace to an analysis and its outputs: what `moetrace analyze` does, as one call."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from moetrace.output import check_output
from moetrace.states.analysis import Analysis, analyze_loads
from moetrace.states.export import write_json, write_out_dir
from moetrace.trace import Trace, read_trace


def analyze(trace: Trace, **options) -> Analysis:
    """:func:`analyze_loads` over all of ``trace``; top-k from its metadata unless given."""
    options.setdefault("top_k", trace.metadata.top_k or 1)
    return analyze_loads(trace.loads(), **options)


def analyze_trace(path: str | Path, *, json_path: str | Path | None = None,
                  out_dir: str | Path | None = None, force: bool = False,
                  progress: Callable[[int, int], None] | None = None,
                  executor=None, **options) -> Analysis:
    """Read the trace at ``path``, analyze it, and write the JSON and --out directory if asked.

    The analysis runs a chunk of layers at a time on ``executor`` (moetrace.scale: default a
    local process pool; one chunk, in this process, when the trace fits the memory budget).
    Outputs follow the output policy (moetrace.output), checked before any work.
    """
    if json_path is not None:
        check_output(json_path, kind="file", inputs=[path], force=force)
    if out_dir is not None:
        check_output(out_dir, kind="dir", inputs=[path], force=force)
    from moetrace.scale import run

    trace = read_trace(path)
    options.setdefault("top_k", trace.metadata.top_k or 1)
    analysis = run.analyze(trace, executor=executor, progress=progress, **options)
    if json_path is not None:
        write_json(analysis, json_path, trace=str(path), force=force)
    if out_dir is not None:
        write_out_dir(analysis, trace, out_dir, force=force, trace_label=str(path))
    return analysis
