"""`moetrace watch DIR`: follow a recording while the job runs; write plans when they pay."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from moetrace.cli.app import command, console, warn
from moetrace.cli.render import Force, emit_json, safe
from moetrace.defaults import REPLAN_GAIN, REPLAN_INTERVAL
from moetrace.errors import ParameterError
from moetrace.output import check_output

#: the --json-out document (docs/watch.md)
WATCH_SCHEMA = "moetrace.watch"


@command()
def watch(
    directory: Annotated[Path, typer.Argument(
        help="The directory a recording is writing (rank=R/part-*.parquet).", metavar="DIR")],
    as_json: Annotated[bool, typer.Option(
        "--json", help="One JSON object per update on stdout instead of the live view.")
    ] = False,
    json_out: Annotated[Optional[Path], typer.Option(
        "--json-out", metavar="FILE", help="When the watch ends, write a summary and its "
        "last update to FILE (JSON).")] = None,
    plan_out: Annotated[Optional[Path], typer.Option(
        "--plan-out", metavar="FILE", help="Write a new placement here whenever a re-plan pays "
        "(needs --gpus).")] = None,
    gpus: Annotated[Optional[int], typer.Option(
        "--gpus", help="GPUs the experts are spread over (enables plan checks).")] = None,
    nodes: Annotated[int, typer.Option(help="Nodes (as for plan).")] = 1,
    groups: Annotated[int, typer.Option(help="Expert groups (as for plan).")] = 1,
    redundant: Annotated[Optional[int], typer.Option(
        help="Redundant expert slots (as for plan).")] = None,
    interval: Annotated[int, typer.Option(
        metavar="STEPS", help="The re-plan interval: training steps a plan is held and "
        "forecast.")] = REPLAN_INTERVAL,
    threshold: Annotated[float, typer.Option(
        help="Balancedness gain of a fresh plan that makes a stable layer's re-plan pay.")
    ] = REPLAN_GAIN,
    until_step: Annotated[Optional[int], typer.Option(
        "--until-step", metavar="N", help="Stop once step N is merged.")] = None,
    until_idle: Annotated[Optional[float], typer.Option(
        "--until-idle", metavar="SECONDS", help="Stop after this long without new data.")
    ] = None,
    poll: Annotated[float, typer.Option(
        metavar="SECONDS", help="Seconds between looks at DIR.")] = 1.0,
    stall_steps: Annotated[int, typer.Option(
        "--stall-steps", metavar="STEPS", help="Training steps the other ranks may run ahead "
        "of a silent rank before it is reported and merged without.")] = 2000,
    force: Force = False,
) -> None:
    """Follow a recording live: each layer's online state, imbalance, the forecast's expected
    error and, with --gpus, whether a fresh placement would pay. Ctrl-C ends it. See
    docs/watch.md."""
    from moetrace.cli.watch_view import line, render
    from moetrace.placement import Cluster
    from moetrace.watch import PlanSettings
    from moetrace.watch import watch as follow

    if plan_out is not None and gpus is None:
        raise ParameterError("--plan-out needs --gpus (the cluster the plan is for)")
    if poll <= 0 or (until_idle is not None and until_idle < 0):
        raise ParameterError("--poll must be positive and --until-idle not negative")
    if interval < 1:
        raise ParameterError(f"--interval must be a positive number of steps, got {interval}")
    if plan_out is not None and json_out is not None and \
            os.path.realpath(plan_out) == os.path.realpath(json_out):
        raise ParameterError(f"--plan-out and --json-out name the same file ({json_out}); "
                             "give two")
    plan = None
    if gpus is not None:
        plan = PlanSettings(Cluster(gpus=gpus, nodes=nodes, groups=groups, redundant=redundant),
                            replan_interval=interval, threshold=threshold)
    for path in (plan_out, json_out):
        if path is not None:
            check_output(path, kind="file", inputs=[directory], force=force)
    if not directory.exists():
        warn(f"{directory} does not exist yet; waiting for the recording to start")
    title = f"moetrace watch {safe(directory)}"
    last: dict[str, Any] = {"update": None}  # the last update, as its --json line
    live = None
    if not as_json and console.is_terminal:
        from rich.live import Live

        live = Live(console=console, refresh_per_second=4, transient=False)
        live.start()

    def on_update(snapshot, events):
        last["update"] = {**snapshot, "events": events}
        if as_json:
            sys.stdout.write(json.dumps(last["update"]) + "\n")
            sys.stdout.flush()
        elif live is not None:
            live.update(render(snapshot, title))
        else:
            console.print(line(snapshot))
            for event in events:
                console.print(f"  {event['event']}: " + ", ".join(
                    f"{k} {v}" for k, v in event.items() if k != "event"))

    try:
        result = follow(directory, on_update=on_update, on_problem=warn,
                        plan=plan, plan_out=plan_out, until_step=until_step,
                        until_idle=until_idle, poll=poll, horizon=interval,
                        stall_steps=stall_steps)
    finally:
        if live is not None:
            live.stop()
    state = result.state
    summary = (f"watched {result.updates} update(s), up to step {state.last_step:,}"
               if state is not None and state.last_step is not None else
               "watched no complete step")
    if state is not None and plan is not None:
        summary += f"; plan version {state.plan_version}"
    summary += f" ({result.reason})"
    if json_out is not None:
        emit_json({"schema": WATCH_SCHEMA, "version": 1, "directory": str(directory),
                   "updates": result.updates, "reason": result.reason, "summary": summary,
                   "problems": result.problems, "last_update": last["update"]},
                  to_stdout=False, path=json_out, inputs=[directory], force=force)
    if as_json:
        sys.stderr.write(f"moetrace: {summary}\n")
    else:
        console.print(summary, style="dim")
