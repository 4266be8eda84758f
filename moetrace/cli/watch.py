"""`moetrace watch DIR`: follow a recording while the job runs; write plans when they pay."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from moetrace.cli.app import command, console, renamed, warn
from moetrace.cli.options import PathType
from moetrace.cli.render import emit_json, safe
from moetrace.defaults import POLL_SECONDS, REPLAN_GAIN, REPLAN_INTERVAL, STALL_STEPS
from moetrace.errors import ParameterError
from moetrace.jsondoc import line as line_json
from moetrace.output import check_outputs

#: the --json-out document (docs/watch.md)
WATCH_SCHEMA = "moetrace.watch"


@command()
@click.argument("directory", type=PathType, metavar="DIR")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object per update on stdout instead of the live view.")
@click.option("--json-out", type=PathType, metavar="FILE",
              help="When the watch ends, write a summary and its last update to FILE (JSON).")
@click.option("--plan-out", type=PathType, metavar="FILE",
              help="Write a new placement here whenever a re-plan pays (needs --gpus).")
@click.option("--gpus", type=int, help="GPUs the experts are spread over (enables plan "
              "checks).")
@click.option("--nodes", type=int, default=1, show_default=True, help="Nodes (as for plan).")
@click.option("--groups", type=int, default=1, show_default=True,
              help="Expert groups (as for plan).")
@click.option("--redundant", type=int, help="Redundant expert slots (as for plan).")
@click.option("--replan-interval", type=int, default=REPLAN_INTERVAL, show_default=True,
              metavar="STEPS",
              help="The re-plan interval: training steps a plan is held and forecast.")
@renamed("--interval", "--replan-interval", type=int)
@click.option("--threshold", type=float, default=REPLAN_GAIN, show_default=True,
              help="Balancedness gain of a fresh plan that makes a stable layer's re-plan pay.")
@click.option("--until-step", type=int, metavar="N", help="Stop once step N is merged.")
@click.option("--until-idle", type=float, metavar="SECONDS",
              help="Stop after this long without new data.")
@click.option("--poll", type=float, default=POLL_SECONDS, show_default=True, metavar="SECONDS",
              help="Seconds between looks at DIR.")
@click.option("--stall-steps", type=int, default=STALL_STEPS, show_default=True,
              metavar="STEPS",
              help="Training steps the other ranks may run ahead of a silent rank before it is "
                   "reported and merged without.")
@click.option("--force", is_flag=True,
              help="Replace existing outputs (a directory only if moetrace wrote it).")
def watch(directory: Path, as_json: bool, json_out: Path | None, plan_out: Path | None,
          gpus: int | None, nodes: int, groups: int, redundant: int | None,
          replan_interval: int, threshold: float, until_step: int | None,
          until_idle: float | None, poll: float, stall_steps: int, force: bool) -> None:
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
    if replan_interval < 1:
        raise ParameterError(f"--replan-interval must be a positive number of steps, got "
                             f"{replan_interval}")
    check_outputs([(plan_out, "file"), (json_out, "file")], inputs=[directory], force=force)
    plan = None
    if gpus is not None:
        plan = PlanSettings(Cluster(gpus=gpus, nodes=nodes, groups=groups, redundant=redundant),
                            replan_interval=replan_interval, threshold=threshold)
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
            sys.stdout.write(line_json(last["update"]))
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
                        until_idle=until_idle, poll=poll, horizon=replan_interval,
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
