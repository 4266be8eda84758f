"""`moetrace info TRACE`: dimensions, steps and gaps, tokens per step, metadata."""

from __future__ import annotations

from typing import Any

from moetrace.cli.app import command, console
from moetrace.cli.options import output_options, trace_argument
from moetrace.cli.render import emit_json, plain, safe
from moetrace.output import check_outputs


@command()
@trace_argument
@output_options
def info(trace: str, as_json: bool, json_out, force: bool) -> None:
    """Describe a trace: layers, experts, steps and gaps, tokens per step, metadata."""
    from moetrace.trace import read_trace
    from moetrace.trace.summary import describe

    check_outputs([(json_out, "file")], inputs=[trace], force=force)
    summary = describe(read_trace(trace))
    emit_json(summary, to_stdout=as_json, path=json_out, inputs=[trace], force=force)
    if not as_json:
        render(summary)


def render(summary: dict[str, Any]) -> None:
    from rich.table import Table

    steps = summary["steps"]
    unit = "steps" if steps["interval"] == 1 else "samples"
    gaps = f"{len(steps['gaps'])} gaps, {steps['missing']:,} {unit} missing" if steps["gaps"] \
        else "no gaps"
    console.print(f"[bold]{safe(summary['path'])}[/]", soft_wrap=True)
    console.print(f"  layers {summary['layers']}, experts per layer "
                  f"{summary['experts_per_layer']}" + ("  (ranks summed)" if
                                                        summary["ranks_summed"] else ""))
    every = steps["interval"]
    sampling = "every step" if every == 1 else f"every {every:,} steps (a sampled trace)"
    console.print(f"  steps {steps['first']:,}..{steps['last']:,}: {steps['count']:,} recorded, "
                  f"{sampling}, {gaps}")
    console.print("  integrity: " + _INTEGRITY[summary["integrity"]])
    meta = summary["metadata"]
    top_k = meta.get("top_k")
    title = "routed slots per step (tokens x top-k)" if (top_k or 1) > 1 else "tokens per step"
    table = Table("layer", "min", "median", "max", title=title, title_justify="left")
    for row in summary["tokens_per_step"]:
        table.add_row(str(row["layer"]), f"{row['min']:,}", f"{row['median']:,.0f}",
                      f"{row['max']:,}")
    console.print(table)
    if top_k and top_k > 1 and meta.get("tokens_per_step"):
        console.print(f"  {meta['tokens_per_step']:,} tokens per step (metadata), each routed "
                      f"to top-{top_k} experts")
    console.print("  metadata:")
    shown = {k: v for k, v in meta.items() if k != "extra" and v not in (None, {}, [])}
    for key, value in {**shown, **meta.get("extra", {})}.items():
        console.print(f"    {safe(key)}: {safe(_readable(value))}")


#: what each integrity level of moetrace.trace.integrity means to a user
_INTEGRITY = {
    "file": "whole-file and page checksums verified: any corruption is detected",
    "pages": "page checksums verified; its footer is not covered (written by an older "
             "moetrace: `moetrace convert` rewrites it with a whole-file checksum)",
    "none": "no checksums (not written by moetrace): corruption of this file cannot be "
            "detected",
}


def _readable(value: Any, limit: int = 8) -> str:
    """A metadata value in one short line: scalars as they are, long lists and nested
    structures summarised (``--json`` has them whole)."""
    if isinstance(value, dict):
        if all(not isinstance(v, (dict, list)) for v in value.values()) and len(value) <= limit:
            return ", ".join(f"{k}={v}" for k, v in value.items())
        return f"{len(value)} entries (see --json)"
    if isinstance(value, list):
        if all(not isinstance(v, (dict, list)) for v in value):
            head = ", ".join(plain(v) for v in value[:limit])
            more = f", ... ({len(value)} values)" if len(value) > limit else ""
            return f"[{head}{more}]"
        return f"{len(value)} items (see --json)"
    return plain(value)
