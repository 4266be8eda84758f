"""`moetrace plan TRACE --gpus G`: where to put (and replicate) every expert next.

The plan for the re-plan interval after the trace's last step (or ``--at``), written as JSON
(``-o``) and, if asked, in the form SGLang's ``--init-expert-location`` reads (``--sglang``).
What every policy would have bought over the trace is ``moetrace replay`` (cli/replay.py);
``plan --simulate`` still reaches it, with a note, for one release.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from moetrace.cli.app import command, console, renamed, warn
from moetrace.cli.options import (PathType, cluster, cluster_options, execution,
                                  execution_options, output_options, replan_options,
                                  trace_argument)
from moetrace.cli.progress import progress_bar
from moetrace.cli.render import emit_json, safe
from moetrace.errors import ParameterError
from moetrace.jsondoc import dumps
from moetrace.output import check_outputs

if TYPE_CHECKING:
    from moetrace.placement.plan import PlacementPlan

#: the load estimates a plan can be made from (moetrace.placement.plan.SOURCES)
SOURCES = ("forecast", "window", "oracle")


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def render_plan(plan: PlacementPlan, title: str) -> None:
    from rich import box
    from rich.table import Table

    table = Table(title=safe(title), title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("layer", "balanced (plan)", "balanced (static)", "most replicas"):
        table.add_column(column, justify="right", no_wrap=True)
    for i, layer in enumerate(plan.layers):
        hottest = int(plan.logcnt[i].argmax())
        table.add_row(str(layer), _pct(plan.expected[i]), _pct(plan.expected_static[i]),
                      f"expert {hottest} x{int(plan.logcnt[i, hottest])}")
    console.print(table)
    console.print(f"balancedness = mean / max GPU load under the {plan.source} estimate of "
                  f"steps {plan.at + 1:,}-{plan.at + plan.interval:,} (1 = perfect)",
                  style="dim")


@command()
@trace_argument
@cluster_options
@click.option("-o", "--out", type=PathType, metavar="FILE",
              help="Plan to write (JSON: docs/placement.md).")
@click.option("--sglang", type=PathType, metavar="FILE",
              help="Also write the plan as the JSON SGLang's --init-expert-location reads.")
@click.option("--estimate", type=click.Choice(list(SOURCES)), default="forecast",
              show_default=True,
              help="Load estimate planned from: forecast, window, or oracle (evaluation only: "
                   "the actual steps after --at).")
@renamed("--from", "--estimate", type=click.Choice(list(SOURCES)))
@click.option("--at", type=int, metavar="STEP",
              help="Plan at this step from the history up to it (default: the trace's last "
                   "step).")
@replan_options
@execution_options
@output_options
@click.option("--simulate", is_flag=True, hidden=True)
@click.option("--policies", hidden=True)
@click.option("--start", type=int, hidden=True)
@click.option("--expert-params", type=int, hidden=True)
@click.option("--bytes-per-param", type=int, hidden=True)
def plan(trace: str, gpus: int | None, nodes: int, groups: int, replicas: int | None,
         redundant: int | None, planner: str, out: Path | None, sglang: Path | None,
         estimate: str, at: int | None, replan_interval: int | None, load_window: int | None,
         predictor: str, backend, workers, ray_address, as_json: bool, json_out: Path | None,
         force: bool, simulate: bool, **replayed) -> None:
    """Plan where every expert goes (and which get replicas) for the next re-plan interval.
    See docs/placement.md; `moetrace replay` replays placement policies over the trace."""
    from moetrace import pipeline
    from moetrace.output import write_texts

    if simulate:  # the old mode switch: the same work is now `moetrace replay`
        if out or sglang:
            raise ParameterError("--simulate reports results (table, --json, --json-out); -o "
                                 "and --sglang write a plan: run without --simulate for those")
        warn("plan --simulate is now `moetrace replay`; the flag goes in the next release")
        return click.get_current_context().invoke(
            replay, trace=trace, gpus=gpus, nodes=nodes, groups=groups, replicas=replicas,
            redundant=redundant, planner=planner, replan_interval=replan_interval,
            load_window=load_window, predictor=predictor, backend=backend, workers=workers,
            ray_address=ray_address, as_json=as_json, json_out=json_out, force=force,
            **replayed)
    given = [f"--{k.replace('_', '-')}" for k, v in replayed.items() if v is not None]
    if given:
        raise ParameterError(f"{given[0]} applies to `moetrace replay`")
    check_outputs([(out, "file"), (sglang, "file"), (json_out, "file")], inputs=[trace],
                  force=force)
    placement = cluster(gpus, nodes, groups, replicas, redundant, planner)
    with progress_bar(f"planning from the {estimate} estimate", quiet=as_json) as progress:
        result = pipeline.plan(trace, placement, estimate=estimate, predictor=predictor, at=at,
                               replan_interval=replan_interval, load_window=load_window,
                               run=execution(backend, workers, ray_address, progress))
    doc = result.document(trace)
    texts = [(out, dumps(doc)), (sglang, dumps(result.sglang()) if sglang else None),
             (json_out, dumps(doc) if json_out else None)]
    write_texts([(path, text) for path, text in texts if path is not None], inputs=[trace],
                force=force)
    if as_json:
        emit_json(doc, to_stdout=True, path=None)
        return
    if result.fallback:
        warn(f"{predictor}: {result.fallback}")
    render_plan(result, f"{trace}: plan at step {result.at:,} on {placement.gpus} GPUs, "
                        f"{result.slots} slots")
    for path, what in ((out, "plan"), (sglang, "SGLang --init-expert-location file")):
        if path is not None:
            console.print(f"wrote {what} [bold]{safe(path)}[/]", soft_wrap=True)
    if out is None and sglang is None:
        console.print("the plan was not written (pass -o FILE)", style="dim")


from moetrace.cli.replay import replay  # noqa: E402  (registered after plan, listed after it)
