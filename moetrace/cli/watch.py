"""`moetrace watch DIR`: follow a recording while the job runs; write plans when they pay."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from moetrace.cli.app import command, console, warn
from moetrace.cli.render import Force, safe
from moetrace.errors import ParameterError
from moetrace.output import check_output


@command()
def watch(
    directory: Annotated[Path, typer.Argument(
        help="The directory a recording is writing (rank=R/part-*.parquet).", metavar="DIR")],
    as_json: Annotated[bool, typer.Option(
        "--json", help="One JSON object per update on stdout instead of the live view.")
    ] = False,
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
        metavar="STEPS", help="Training steps a plan is held and forecast.")] = 1000,
    threshold: Annotated[float, typer.Option(
        help="Balancedness gain of a fresh plan that makes a re-plan pay.")] = 0.02,
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
    from moetrace.placement import Cluster
    from moetrace.watch import PlanSettings
    from moetrace.watch import watch as follow
    from moetrace.watch.view import line, render

    if plan_out is not None and gpus is None:
        raise ParameterError("--plan-out needs --gpus (the cluster the plan is for)")
    if poll <= 0 or (until_idle is not None and until_idle < 0):
        raise ParameterError("--poll must be positive and --until-idle not negative")
    if not directory.exists():
        warn(f"{directory} does not exist yet; waiting for the recording to start")
    plan = None
    if gpus is not None:
        plan = PlanSettings(Cluster(gpus=gpus, nodes=nodes, groups=groups, redundant=redundant),
                            interval=interval, threshold=threshold)
    if plan_out is not None:
        check_output(plan_out, kind="file", inputs=[directory], force=force)
    title = f"moetrace watch {safe(directory)}"
    live = None
    if not as_json and console.is_terminal:
        from rich.live import Live

        live = Live(console=console, refresh_per_second=4, transient=False)
        live.start()

    def on_update(snapshot, events):
        if as_json:
            sys.stdout.write(json.dumps({**snapshot, "events": events}) + "\n")
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
                        until_idle=until_idle, poll=poll, stall_steps=stall_steps)
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
    if as_json:
        sys.stderr.write(f"moetrace: {summary}\n")
    else:
        console.print(summary, style="dim")
