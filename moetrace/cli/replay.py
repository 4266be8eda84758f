"""`moetrace replay TRACE --gpus G`: every placement policy replayed over the trace.

Static, window (vLLM's), forecast, adaptive (state-aware) and oracle placements re-planned at
their own steps and held in between; per policy and state: balancedness, modeled compute
time, re-plans, replicas and bytes moved (moetrace.placement.replay). Until 0.3 this was
``plan --simulate``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from moetrace.cli.app import command, console, warn
from moetrace.cli.options import (cluster, cluster_options, execution, execution_options,
                                  output_options, replan_options, state_window_option,
                                  trace_argument)
from moetrace.cli.progress import progress_bar
from moetrace.cli.render import emit_json, safe
from moetrace.defaults import BYTES_PER_PARAM
from moetrace.display import format_bytes
from moetrace.output import check_outputs

if TYPE_CHECKING:
    from moetrace.placement.replay import PlacementReplay


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


@command()
@trace_argument
@cluster_options
@click.option("--policies", metavar="NAMES",
              help="static, window, forecast, adaptive, oracle (comma-separated; "
                   "forecast:NAME for another predictor). Default: all five.")
@replan_options
@click.option("--start", type=int, metavar="STEP",
              help="Step of the first re-plan (default: first step + the longer of the load "
                   "window and the re-plan interval).")
@state_window_option(": it splits the results by state and drives the adaptive policy")
@click.option("--expert-params", type=int, metavar="N",
              help="Parameters of one expert, for bytes moved (default: from the trace's "
                   "model where known).")
@click.option("--bytes-per-param", type=int, default=BYTES_PER_PARAM, show_default=True,
              metavar="N",
              help="Bytes moved per expert parameter: 16 for a training expert with Adam "
                   "state, 2 for a bf16 replica.")
@execution_options
@output_options
def replay(trace: str, gpus: int | None, nodes: int, groups: int, replicas: int | None,
           redundant: int | None, planner: str, policies: str | None,
           replan_interval: int | None, load_window: int | None, predictor: str,
           start: int | None, expert_params: int | None, bytes_per_param: int | None,
           backend, workers, ray_address, as_json: bool, json_out: Path | None, force: bool,
           state_window: int | None = None) -> None:
    """Replay placement policies over the trace: what each would have bought in balance and
    bytes moved, per state. See docs/placement.md."""
    from moetrace import pipeline

    check_outputs([(json_out, "file")], inputs=[trace], force=force)
    placement = cluster(gpus, nodes, groups, replicas, redundant, planner)
    names = None if policies is None else [p.strip() for p in policies.split(",") if p.strip()]
    with progress_bar("replaying placement policies", quiet=as_json) as progress:
        result = pipeline.replay(trace, placement, names, replan_interval=replan_interval,
                                 load_window=load_window, predictor=predictor, start=start,
                                 state_window=state_window, expert_params=expert_params,
                                 bytes_per_param=bytes_per_param,
                                 run=execution(backend, workers, ray_address, progress))
    emit_json(result.document(trace), to_stdout=as_json, path=json_out, inputs=[trace],
              force=force)
    if not as_json:
        render_replay(result, f"{trace}: {placement.gpus} GPUs, {result.slots} slots, re-plan "
                              f"every {result.interval:,} steps from step {result.start:,}")


def render_replay(result: PlacementReplay, title: str) -> None:
    """Per policy and state (80 columns: short headers, the units in the caption; a long
    policy name folds, a number never shrinks)."""
    from rich import box
    from rich.table import Table

    table = Table(title=safe(title), title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False,
                  caption="bal.: mean / max GPU tokens per layer and step (1 = perfect), its "
                          "mean and 5th percentile; time: modeled MoE compute over a perfectly "
                          "balanced step; plans: re-plans; moves: replicas placed on a GPU that "
                          "did not hold them, and their bytes",
                  caption_justify="left", caption_style="dim")
    for column in ("policy", "state", "bal.", "p5", "time", "plans", "moves", "bytes"):
        text = column in ("policy", "state")
        table.add_column(column, justify="left" if text else "right", no_wrap=not text,
                         overflow="fold", min_width=None if text else len(column))
    for row in result.rows():
        if row["layer"] is not None:
            continue
        table.add_row(row["policy"], row["state"], _pct(row["balancedness"]),
                      _pct(row["balancedness_p5"]), f"{row['time_vs_balanced']:.2f}x",
                      str(row["replans"]), f"{row['replicas_moved']:,}",
                      format_bytes(row["bytes_moved"]))
    console.print(table)
    gap = result.gap_closed()
    for name, share in gap.items():
        console.print(f"{name} closes {_pct(share)} of the balancedness gap between window "
                      "and oracle", style="dim")
    if result.bytes_per_replica() is None:
        console.print("bytes moved need the parameters of one expert: give --expert-params",
                      style="dim")
    for note in result.notes:
        warn(note)
