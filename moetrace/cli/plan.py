"""`moetrace plan TRACE --gpus G`: where to put (and replicate) every expert, and what that buys.

Without ``--simulate``: the plan for the next interval after the trace's last step (or
``--at``), written as JSON (``-o``) and, if asked, in the form SGLang's
``--init-expert-location`` reads (``--sglang``). With ``--simulate``: every policy replayed
over the trace (moetrace.placement.replay), per policy and state.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from moetrace.cli.app import command, console, warn
from moetrace.cli.options import Backend, RayAddress, TraceArg, Workers
from moetrace.cli.progress import progress_bar
from moetrace.cli.render import Force, JsonFlag, JsonOut, emit_json, safe
from moetrace.display import format_bytes
from moetrace.errors import ParameterError
from moetrace.output import check_output

if TYPE_CHECKING:
    from moetrace.placement.plan import PlacementPlan
    from moetrace.placement.replay import PlacementReplay


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


def render_replay(result: PlacementReplay, title: str) -> None:
    from rich import box
    from rich.table import Table

    table = Table(title=safe(title), title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("policy", "state", "balanced", "p5", "time", "re-plans", "moves",
                   "bytes moved"):
        table.add_column(column, justify="left" if column in ("policy", "state") else "right",
                         no_wrap=True)
    for row in result.rows():
        if row["layer"] is not None:
            continue
        table.add_row(row["policy"], row["state"], _pct(row["balancedness"]),
                      _pct(row["balancedness_p5"]), f"{row['time_vs_balanced']:.2f}x",
                      str(row["replans"]), f"{row['replicas_moved']:,}",
                      format_bytes(row["bytes_moved"]))
    console.print(table)
    console.print("balanced: mean / max GPU tokens per layer and step (1 = perfect), its mean "
                  "and 5th percentile; time: modeled MoE compute over a perfectly balanced "
                  "step; moves: replicas placed on a GPU that did not hold them", style="dim")
    gap = result.gap_closed()
    for name, share in gap.items():
        console.print(f"{name} closes {_pct(share)} of the balancedness gap between window "
                      "and oracle", style="dim")
    if result.bytes_per_replica() is None:
        console.print("bytes moved need the parameters of one expert: give --expert-params",
                      style="dim")
    for note in result.notes:
        warn(note)


@command()
def plan(
    trace: TraceArg,
    gpus: Annotated[int, typer.Option("--gpus", help="GPUs the experts are spread over.")],
    out: Annotated[Optional[Path], typer.Option(
        "-o", "--out", metavar="FILE", help="Plan to write (JSON: docs/placement.md).")] = None,
    sglang: Annotated[Optional[Path], typer.Option(
        "--sglang", metavar="FILE", help="Also write the plan as the JSON SGLang's "
        "--init-expert-location reads.")] = None,
    nodes: Annotated[int, typer.Option(help="Nodes (GPUs split evenly over them).")] = 1,
    groups: Annotated[int, typer.Option(
        help="Expert groups (group-limited routing); kept whole on a node when the nodes "
             "divide them.")] = 1,
    replicas: Annotated[Optional[int], typer.Option(
        help="Physical expert slots R, a multiple of --gpus (default: one per expert).")
    ] = None,
    redundant: Annotated[Optional[int], typer.Option(
        help="Slots beyond one per expert (R = experts + X).")] = None,
    source: Annotated[str, typer.Option(
        "--from", metavar="SOURCE", help="Load estimate: forecast, window or oracle "
        "(evaluation only: the actual steps after --at).")] = "forecast",
    predictor: Annotated[str, typer.Option(
        "--predictor", metavar="NAME", help="Predictor of the forecast estimate.")] = "auto",
    at: Annotated[Optional[int], typer.Option(
        help="Plan at this step from the history up to it (default: the trace's last step).")
    ] = None,
    interval: Annotated[int, typer.Option(
        metavar="STEPS", help="Training steps a plan is held (between re-plans).")] = 1000,
    window: Annotated[int, typer.Option(
        metavar="STEPS", help="Steps of the window estimate (vLLM's default 1000).")] = 1000,
    rebalance: Annotated[str, typer.Option(
        metavar="POLICY", help="Planner: balanced (default) or eplb (DeepSeek's own).")
    ] = "balanced",
    simulate: Annotated[bool, typer.Option(
        "--simulate", help="Replay placement policies over the whole trace instead.")] = False,
    policies: Annotated[Optional[str], typer.Option(
        metavar="NAMES", help="With --simulate: static, window, forecast, adaptive, oracle "
        "(comma-separated; forecast:NAME for another predictor). Default: all five.")] = None,
    start: Annotated[Optional[int], typer.Option(
        help="With --simulate: step of the first re-plan (default: first step + "
             "max(window, interval)).")] = None,
    expert_params: Annotated[Optional[int], typer.Option(
        "--expert-params", help="Parameters of one expert, for bytes moved (default: from "
        "the trace's model where known).")] = None,
    bytes_per_param: Annotated[int, typer.Option(
        "--bytes-per-param", help="Bytes moved per expert parameter: 16 for a training "
        "expert with Adam state, 2 for a bf16 replica.")] = 16,
    backend: Backend = None,
    workers: Workers = None,
    ray_address: RayAddress = None,
    as_json: JsonFlag = False,
    json_out: JsonOut = None,
    force: Force = False,
) -> None:
    """Plan where every expert goes (and which get replicas) for the next interval, or replay
    placement policies over the trace with --simulate. See docs/placement.md."""
    from moetrace.placement import Cluster
    from moetrace.trace import read_trace

    if simulate and (out or sglang):
        raise ParameterError("--simulate reports results (table, --json, --json-out); -o and "
                             "--sglang write a plan: run without --simulate for those")
    if not simulate and policies:
        raise ParameterError("--policies applies to --simulate")
    for path in (out, sglang, json_out):
        if path is not None:
            check_output(path, kind="file", inputs=[trace], force=force)
    if bytes_per_param < 1:
        raise ParameterError(f"--bytes-per-param must be positive, got {bytes_per_param}")
    from moetrace.cli.options import executor

    pool = executor(backend, workers, ray_address)
    data = read_trace(trace)
    cluster = Cluster(gpus=gpus, nodes=nodes, groups=groups, replicas=replicas,
                      redundant=redundant, rebalance=rebalance)
    cluster.slots(data.n_experts)  # a cluster that does not fit fails before any work
    if simulate:
        _simulate(trace, data, cluster, policies=policies, interval=interval,
                  window=window, predictor=predictor, start=start, expert_params=expert_params,
                  bytes_per_param=bytes_per_param, as_json=as_json, json_out=json_out,
                  force=force, pool=pool)
        return
    from moetrace.cli.render import json_text
    from moetrace.output import write_file
    from moetrace.scale import run

    with progress_bar(f"planning from the {source} estimate", quiet=as_json):
        result = run.plan(data, cluster, executor=pool, source=source, predictor=predictor,
                          at=at, interval=interval, window=window,
                          source_layers=data.metadata.extra.get("source_layers"))
    doc = result.document(trace)
    for path, content in ((out, doc), (sglang, result.sglang() if sglang else None)):
        if path is not None:
            with write_file(path, inputs=[trace], force=force) as tmp:
                tmp.write_text(json_text(content))
    emit_json(doc, to_stdout=as_json, path=json_out, inputs=[trace], force=force)
    if as_json:
        return
    if result.fallback:
        warn(f"{predictor}: {result.fallback}")
    render_plan(result, f"{trace}: plan at step {result.at:,} on {gpus} GPUs, "
                        f"{result.slots} slots")
    for path, what in ((out, "plan"), (sglang, "SGLang --init-expert-location file")):
        if path is not None:
            console.print(f"wrote {what} [bold]{safe(path)}[/]")
    if out is None and sglang is None:
        console.print("the plan was not written (pass -o FILE)", style="dim")


def _simulate(trace, data, cluster, *, policies, interval, window, predictor, start,
              expert_params, bytes_per_param, as_json, json_out, force, pool) -> None:
    from moetrace.placement import DEFAULT_POLICIES, expert_parameters, make_policies
    from moetrace.scale import run

    names = list(DEFAULT_POLICIES) if policies is None else [
        p.strip() for p in policies.split(",") if p.strip()]
    make_policies(names, window=window, predictor=predictor)  # bad names fail before work
    params = expert_params or expert_parameters(data.metadata)
    with progress_bar("replaying placement policies", quiet=as_json) as update:
        analysis = run.analyze(data, executor=pool, top_k=data.metadata.top_k or 1)
        result = run.replay(data, cluster, names, {"window": window, "predictor": predictor},
                            executor=pool, interval=interval, start=start, window=window,
                            stable=analysis.stable, online_stable=analysis.online_stable,
                            expert_params=params, bytes_per_param=bytes_per_param,
                            progress=lambda task, done, total: update(done, total, task))
    emit_json(result.document(trace), to_stdout=as_json, path=json_out, inputs=[trace],
              force=force)
    if not as_json:
        render_replay(result, f"{trace}: {cluster.gpus} GPUs, {result.slots} slots, re-plan "
                              f"every {interval:,} steps from step {result.start:,}")
