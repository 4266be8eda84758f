"""`moetrace info TRACE`: dimensions, steps and gaps, tokens per step, metadata."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from moetrace.cli.app import app, console
from moetrace.trace import read_trace
from moetrace.trace.summary import describe


@app.command()
def info(
    trace: Annotated[str, typer.Argument(help="Trace file, directory of parts, or glob.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """Describe a trace: layers, experts, steps and gaps, tokens per step, metadata."""
    summary = describe(read_trace(trace))
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    steps = summary["steps"]
    gaps = f"{len(steps['gaps'])} gaps, {steps['missing']} steps missing" if steps["gaps"] \
        else "no gaps"
    console.print(f"[bold]{summary['path']}[/]")
    console.print(f"  layers {summary['layers']}, experts per layer "
                  f"{summary['experts_per_layer']}" + ("  (ranks summed)" if
                                                        summary["ranks_summed"] else ""))
    console.print(f"  steps {steps['first']}..{steps['last']}: {steps['count']} steps, {gaps}")
    table = Table("layer", "min", "median", "max", title="tokens per step", title_justify="left")
    for row in summary["tokens_per_step"]:
        table.add_row(str(row["layer"]), f"{row['min']:,}", f"{row['median']:,.0f}",
                      f"{row['max']:,}")
    console.print(table)
    meta = {k: v for k, v in summary["metadata"].items() if v not in (None, {}, [])}
    extra = meta.pop("extra", {})
    console.print("  metadata: " + (", ".join(f"{k}={v}" for k, v in meta.items()) or "none"))
    for key, value in extra.items():
        text = json.dumps(value)
        console.print(f"    {key}: {text if len(text) <= 100 else text[:97] + '...'}")
