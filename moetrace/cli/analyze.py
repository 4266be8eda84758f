"""`moetrace analyze TRACE`: when each layer's expert loads stopped fluctuating, and how much.

Prints one row per MoE layer (stable-from step, segments, fluctuation and imbalance in each
state, noise floor) and a one-line verdict for the model; --json and --out write the details.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich import box
from rich.progress import Progress
from rich.table import Table

from moetrace.cli.app import app, console
from moetrace.states import (
    DEFAULT_SENSITIVITY,
    DEFAULT_STABLE_RATIO,
    DEFAULT_WINDOW,
    STABLE,
    TRANSIENT,
    Analysis,
    LayerAnalysis,
    analyze_trace,
)


def _pct(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{100 * value:.3g}%"


def _ratio(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.2f}"


def _segments(la: LayerAnalysis) -> str:
    """Each segment as its state's initial and its first step: "T 0, S 1013"."""
    return ", ".join(f"{s.state[0].upper()} {s.start}" for s in la.segments)


def _floor(la: LayerAnalysis) -> str:
    return _pct(la.noise_floor[STABLE if STABLE in la.noise_floor else TRANSIENT].value)


def render(analysis: Analysis, title: str) -> None:
    """The per-layer table and the model's verdict."""
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for name in ("layer", "stable\nfrom", "segments", "fluct.\nT", "fluct.\nS", "max/mean\nT",
                 "max/mean\nS", "noise\nfloor"):
        table.add_column(name, justify="left" if name == "segments" else "right")
    for la in analysis.layers:
        table.add_row(str(la.layer), "never" if la.stable_from is None else str(la.stable_from),
                      _segments(la),
                      _pct(la.fluctuation.get(TRANSIENT)), _pct(la.fluctuation.get(STABLE)),
                      _ratio(la.imbalance.get(TRANSIENT)), _ratio(la.imbalance.get(STABLE)),
                      _floor(la))
    console.print(table)
    console.print("T: transient, S: stable; segments: each state from the step given; "
                  "fluct.: mean windowed "
                  "std of the shares; max/mean: busiest expert's load over the mean; noise floor: "
                  "per-step error a perfect predictor still makes, stable state (else transient) "
                  f"(window {analysis.window}, sensitivity {analysis.sensitivity:g}, "
                  f"stable ratio {analysis.stable_ratio:g}, top-k {analysis.top_k})",
                  style="dim")
    console.print(f"[bold]verdict:[/] {analysis.verdict}")


@app.command()
def analyze(
    trace: Annotated[str, typer.Argument(help="Trace file, directory of parts, or glob.")],
    window: Annotated[int, typer.Option(
        help="Sliding window in steps for the variance and range of each expert's share "
             "(the paper used 10, 100 and 200).")] = DEFAULT_WINDOW,
    sensitivity: Annotated[float, typer.Option(
        help="Change-point sensitivity: higher finds more, shorter segments; lower only "
             "the clearest changes.")] = DEFAULT_SENSITIVITY,
    stable_ratio: Annotated[float, typer.Option(
        "--stable-ratio",
        help="A stretch is stable when its windowed share variance is at most this multiple "
             "of the layer's noise variance.")] = DEFAULT_STABLE_RATIO,
    top_k: Annotated[Optional[int], typer.Option(
        "--top-k", help="Experts per token, for the noise floor (default: from the trace's "
        "metadata, else 1).")] = None,
    json_path: Annotated[Optional[Path], typer.Option(
        "--json", metavar="PATH", help="Write the results as JSON (schema in docs/analysis.md).")
    ] = None,
    out: Annotated[Optional[Path], typer.Option(
        "--out", metavar="DIR", help="Write per-step states and per-window statistics (Parquet) "
        "and per-layer figures (PNG) into DIR.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing --out DIR.")] = False,
) -> None:
    """Split each MoE layer's load history into transient and stable states.

    For every layer: where the stable state begins, its segments, how much the expert shares
    fluctuate and how imbalanced they are in each state, and the noise floor. See
    docs/analysis.md for the method.
    """
    options = {"window": window, "sensitivity": sensitivity, "stable_ratio": stable_ratio}
    if top_k is not None:
        options["top_k"] = top_k
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("analyzing layers", total=None)
        analysis = analyze_trace(
            trace, json_path=json_path, out_dir=out, force=force,
            progress=lambda done, total: progress.update(task, completed=done, total=total),
            **options)
    render(analysis, f"{trace}: {len(analysis.steps)} steps, {len(analysis.layers)} MoE layers")
    for label, path in (("JSON", json_path), ("outputs", out)):
        if path is not None:
            console.print(f"wrote {label} [bold]{path}[/]")
