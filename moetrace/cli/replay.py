"""`moetrace replay TRACE --gpus G`: every placement policy replayed over the trace.

Static, window (vLLM's), forecast, adaptive (state-aware) and hindsight placements re-planned
at their own steps and held in between; per policy and state: balancedness, modeled compute
time, re-plans, replicas and bytes moved (moetrace.placement.replay); per policy, the modeled
seconds saved against the static placement, net of the moves (moetrace.placement.timing).
Until 0.3 this was ``plan --simulate``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from moetrace.cli.app import command, console, warn
from moetrace.cli.options import (cluster, cluster_options, execution, execution_options,
                                  move_options, output_options, replan_options,
                                  state_window_option, time_model, time_model_options,
                                  trace_argument)
from moetrace.cli.progress import progress_bar
from moetrace.cli.render import emit_json, safe
from moetrace.display import format_bytes, format_seconds as seconds
from moetrace.output import check_outputs

if TYPE_CHECKING:
    from moetrace.placement.replay import PlacementReplay


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


@command()
@trace_argument
@cluster_options
@move_options
@click.option("--policies", metavar="NAMES",
              help="static, window, forecast, adaptive, hindsight (comma-separated; "
                   "forecast:NAME for another predictor). Default: all five.")
@replan_options
@click.option("--start", type=int, metavar="STEP",
              help="Step of the first re-plan (default: first step + the longer of the load "
                   "window and the re-plan interval).")
@state_window_option(": it splits the results by state and drives the adaptive policy")
@time_model_options
@execution_options
@output_options
def replay(trace: str, gpus: int | None, nodes: int, groups: int, replicas: int | None,
           redundant: int | None, planner: str, move_tolerance: float, from_scratch: bool,
           policies: str | None, replan_interval: int | None, load_window: int | None,
           predictor: str, start: int | None, expert_params: int | None,
           bytes_per_param: int, token_seconds: float | None, gpu_tflops: float,
           intra_node_gbps: float, inter_node_gbps: float, rearrangement: str,
           stall_seconds: float, backend, workers, ray_address, as_json: bool,
           json_out: Path | None, force: bool, state_window: int | None = None) -> None:
    """Replay placement policies over the trace: what each would have bought in balance,
    moves and modeled seconds, per state. See docs/placement.md."""
    from moetrace import pipeline

    check_outputs([(json_out, "file")], inputs=[trace], force=force)
    placement = cluster(gpus, nodes, groups, replicas, redundant, planner,
                        move_tolerance=move_tolerance, from_scratch=from_scratch)
    model = time_model(expert_params, bytes_per_param, token_seconds, gpu_tflops,
                       intra_node_gbps, inter_node_gbps, rearrangement, stall_seconds)
    names = None if policies is None else [p.strip() for p in policies.split(",") if p.strip()]
    with progress_bar("replaying placement policies", quiet=as_json) as progress:
        result = pipeline.replay(trace, placement, names, replan_interval=replan_interval,
                                 load_window=load_window, predictor=predictor, start=start,
                                 state_window=state_window, time_model=model,
                                 run=execution(backend, workers, ray_address, progress))
    emit_json(result.document(trace), to_stdout=as_json, path=json_out, inputs=[trace],
              force=force)
    if not as_json:
        render_replay(result, f"{trace}: {placement.gpus} GPUs, {result.slots} slots, re-plan "
                              f"every {result.interval:,} steps from step {result.start:,}")


def render_replay(result: PlacementReplay, title: str) -> None:
    """Per policy and state, then per policy the modeled seconds (80 columns: short headers,
    the units in the captions; a long policy name folds, a number never shrinks)."""
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
    overall = []
    for row in result.rows():
        if row["layer"] is not None:
            continue
        if row["state"] == "all":
            overall.append(row)
        table.add_row(row["policy"], row["state"], _pct(row["balancedness"]),
                      _pct(row["balancedness_p5"]), f"{row['time_vs_balanced']:.2f}x",
                      str(row["replans"]), f"{row['replicas_moved']:,}",
                      format_bytes(row["bytes_moved"]))
    console.print(table)
    steps = len(result.steps) * result.sampling
    if result.time_model.known():
        timing = Table(title=f"modeled MoE time over the {steps:,} steps replayed, against "
                             "the static placement", title_justify="left",
                       box=box.SIMPLE_HEAD, pad_edge=False,
                       caption="saved: compute seconds saved; moves: replicas moved (a "
                               "from-scratch re-plan's); move: their seconds "
                               f"({result.time_model.rearrangement}); net: saved less moves, "
                               "and per step",
                       caption_justify="left", caption_style="dim")
        for column in ("policy", "saved", "moves", "scratch", "move", "net", "per step"):
            timing.add_column(column, justify="left" if column == "policy" else "right",
                              no_wrap=column != "policy", overflow="fold")
        for row in overall:
            timing.add_row(row["policy"], seconds(row["compute_seconds_saved"]),
                           f"{row['moves']:,}", f"{row['moves_from_scratch']:,}",
                           seconds(row["move_seconds"]), seconds(row["net_seconds_saved"]),
                           seconds(row["net_seconds_saved_per_step"]))
        console.print(timing)
    else:
        console.print("modeled seconds need the size of one expert: give --expert-params "
                      "(or --token-seconds and --expert-params)", style="dim")
    for line in gap_lines(result):
        console.print(line, style="dim")
    for note in result.notes:
        warn(note)


def gap_lines(result: PlacementReplay) -> list[str]:
    """The share of the window-to-hindsight gap each policy at their cadence closes, with
    its net modeled seconds beside it; a policy at another cadence is named as such."""
    net = {r["policy"]: r["net_seconds_saved"] for r in result.rows()
           if r["layer"] is None and r["state"] == "all"}
    window = result.policy("window")
    lines = []
    for name, share in result.gap_closed().items():
        saved = "" if net.get(name) is None else f" (net {seconds(net[name])} saved)"
        text = ("the window-to-hindsight gap is under half a point" if share is None
                else f"closes {_pct(share)} of the balancedness gap between window and the "
                     "hindsight plan")
        lines.append(f"{name}: {text}, re-planning as often{saved}")
    if window is not None and result.policy("hindsight") is not None:
        for p in result.policies:
            if p.name in ("static", "window", "hindsight") or p.cadence == window.cadence:
                continue
            saved = "" if net.get(p.name) is None else f", net {seconds(net[p.name])} saved"
            lines.append(f"{p.name}: re-plans every {p.cadence or 0:,} steps, the others every "
                         f"{window.cadence or 0:,}: no gap share at another cadence{saved}")
    return lines
