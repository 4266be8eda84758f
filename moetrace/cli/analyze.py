"""`moetrace analyze TRACE`: when each layer's expert loads stopped fluctuating, and how much.

Prints one row per MoE layer (stable-from step, segments, fluctuation and imbalance in each
state, noise floor) and a one-line verdict for the model; --json and --out write the details.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import click

from moetrace.cli.app import command, console, renamed, warn
from moetrace.cli.options import (PathType, execution, execution_options, output_options,
                                  state_window_option, trace_argument)
from moetrace.cli.progress import progress_bar
from moetrace.cli.render import emit_json, safe
from moetrace.defaults import SENSITIVITY as DEFAULT_SENSITIVITY
from moetrace.defaults import STABLE, TRANSIENT
from moetrace.defaults import STABLE_RATIO as DEFAULT_STABLE_RATIO
from moetrace.output import check_outputs

if TYPE_CHECKING:
    from moetrace.states import Analysis, LayerAnalysis


def _pct(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{100 * value:.2g}%"


def _ratio(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.2f}"


def _segments(la: LayerAnalysis) -> str:
    """Each segment as its state's initial and its first step: "T0 S1013"."""
    return " ".join(f"{s.state[0].upper()}{s.start}" for s in la.segments)


def _online(la: LayerAnalysis) -> str:
    """The online detector's stable onset and its delay: "4925 (+399)"."""
    if la.online_stable_from is None:
        return "never"
    delay = "" if la.detection_delay is None else f" ({la.detection_delay:+})"
    return f"{la.online_stable_from}{delay}"


def _floor(la: LayerAnalysis) -> str:
    return _pct(la.noise_floor[STABLE if STABLE in la.noise_floor else TRANSIENT].value)


def render(analysis: Analysis, title: str) -> None:
    """The per-layer table and the model's verdict (80 columns wide: a log or a pipe fits)."""
    from rich import box
    from rich.table import Table

    table = Table(title=safe(title), title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for name in ("layer", "stable\nfrom", "online\n(delay)", "fluct.\nT / S",
                 "max/mean\nT / S", "noise\nfloor", "segments"):
        # the numbers never shrink; the segments wrap (one "T0 S1725" pair never splits)
        table.add_column(name, justify="left" if name == "segments" else "right",
                         no_wrap=name != "segments", overflow="fold",
                         min_width=12 if name == "segments" else None)
    for la in analysis.layers:
        table.add_row(str(la.layer), "never" if la.stable_from is None else str(la.stable_from),
                      _online(la),
                      f"{_pct(la.fluctuation.get(TRANSIENT))} / {_pct(la.fluctuation.get(STABLE))}",
                      f"{_ratio(la.imbalance.get(TRANSIENT))} / "
                      f"{_ratio(la.imbalance.get(STABLE))}",
                      _floor(la), _segments(la))
    console.print(table)
    console.print("T: transient, S: stable (segments: each state from the step given); stable "
                  "from, segments: hindsight (the whole "
                  "trace); online: the stable onset a live job believes in, from the steps seen "
                  "so far, and its delay (the step it was called minus the hindsight onset); "
                  "fluct.: mean windowed std of the shares; max/mean: busiest expert's load "
                  "over the mean; noise floor: per-step error a perfect predictor still makes, "
                  "stable state (else transient) "
                  f"({analysis.describe_steps()}, window {analysis.window} steps, sensitivity "
                  f"{analysis.sensitivity:g}, stable ratio {analysis.stable_ratio:g}, top-k "
                  f"{analysis.top_k})", style="dim")
    unreliable = [la.layer for la in analysis.layers
                  if not all(f.reliable for f in la.noise_floor.values())]
    if unreliable:
        console.print(f"note: the noise floors of layer(s) {', '.join(map(str, unreliable))} "
                      "are unreliable: too few routed tokens per expert in a state window to "
                      "know the underlying shares", style="yellow")
    console.print(f"[bold]verdict:[/] {analysis.verdict}")


@command()
@trace_argument
@state_window_option(" (the paper used 10, 100 and 200)")
@renamed("--window", "--state-window", type=int)
@click.option("--sensitivity", type=float, default=DEFAULT_SENSITIVITY, show_default=True,
              help="Change-point sensitivity: higher finds more, shorter segments; lower only "
                   "the clearest changes.")
@click.option("--stable-ratio", type=float, default=DEFAULT_STABLE_RATIO, show_default=True,
              help="A stretch is stable when its windowed share variance is at most this "
                   "multiple of the layer's noise variance.")
@click.option("--top-k", type=int, help="Experts per token, for the noise floor (default: from "
              "the trace's metadata, else 1).")
@execution_options
@click.option("--out", type=PathType, metavar="DIR",
              help="Write per-step states and per-window statistics (Parquet) and per-layer "
                   "figures (PNG) into DIR.")
@output_options
def analyze(trace: str, state_window: int | None, sensitivity: float, stable_ratio: float,
            top_k: int | None, backend, workers, ray_address, out: Path | None,
            as_json: bool, json_out: Path | None, force: bool) -> None:
    """Split each MoE layer's load history into transient and stable states.

    For every layer: where the stable state begins, its segments, how much the expert shares
    fluctuate and how imbalanced they are in each state, and the noise floor. See
    docs/analysis.md for the method.
    """
    from moetrace import pipeline
    from moetrace.states.export import to_json_dict, write_out_dir

    check_outputs([(json_out, "file"), (out, "dir")], inputs=[trace], force=force)
    with progress_bar("analyzing layers", quiet=as_json) as progress:
        run = execution(backend, workers, ray_address, progress)
        data = pipeline.open_trace(trace, run)
        analysis = pipeline.analyze(data, window=state_window, sensitivity=sensitivity,
                                    stable_ratio=stable_ratio, top_k=top_k, run=run,
                                    statistics=out is not None)
        if out is not None:
            write_out_dir(analysis, data, out, force=force, trace_label=trace)
    for note in analysis.notes:
        warn(note)
    emit_json(to_json_dict(analysis, trace), to_stdout=as_json, path=json_out, inputs=[trace],
              force=force)
    if as_json:
        return
    render(analysis, f"{trace}: {analysis.describe_steps()}, {len(analysis.layers)} MoE layers")
    for label, path in (("JSON", json_out), ("outputs", out)):
        if path is not None:
            console.print(f"wrote {label} [bold]{safe(path)}[/]", soft_wrap=True)
