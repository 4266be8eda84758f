"""`moetrace plan TRACE --gpus G`: where to put (and replicate) every expert next.

The plan for the re-plan interval after the trace's last step (or ``--at``), written as JSON
(``-o``) and, if asked, in the forms SGLang's ``--init-expert-location`` (``--sglang``) and
vllm-ascend's static EPLB (``--vllm-ascend``) read. ``--recommend`` answers the question
before it: which re-plan setting saves the most modeled time on this trace, if any
(moetrace.placement.recommend). What every policy would have bought over the trace is
``moetrace replay`` (cli/replay.py); ``plan --simulate`` still reaches it, with a note, for one
release.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from moetrace.cli.app import command, console, renamed, warn
from moetrace.cli.options import (PathType, cluster, cluster_options, execution,
                                  execution_options, move_options, output_options,
                                  replan_options, state_window_option, time_model,
                                  time_model_options, trace_argument)
from moetrace.cli.progress import progress_bar
from moetrace.cli.render import emit_json, safe
from moetrace.errors import ParameterError
from moetrace.jsondoc import dumps
from moetrace.output import check_outputs

if TYPE_CHECKING:
    from moetrace.placement.plan import PlacementPlan
    from moetrace.placement.recommend import Recommendation

#: the load estimates a plan can be made from (moetrace.placement.plan.SOURCES)
SOURCES = ("forecast", "window", "hindsight")
#: the former names of estimates, still accepted (moetrace.placement.estimates.RENAMED)
FORMER = ("oracle",)


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
@move_options
@click.option("-o", "--out", type=PathType, metavar="FILE",
              help="Plan to write (JSON: docs/placement.md).")
@click.option("--sglang", type=PathType, metavar="FILE",
              help="Also write the plan as the JSON SGLang's --init-expert-location reads.")
@click.option("--vllm-ascend", "vllm_ascend", type=PathType, metavar="FILE",
              help="Also write the plan as the expert map vllm-ascend's static EPLB reads "
                   "(expert_map_path).")
@click.option("--estimate", type=click.Choice(list(SOURCES) + list(FORMER)),
              default="forecast", show_default=True, metavar="[" + "|".join(SOURCES) + "]",
              help="Load estimate planned from: forecast, window, or hindsight (evaluation "
                   "only: the actual steps after --at).")
@renamed("--from", "--estimate", type=click.Choice(list(SOURCES) + list(FORMER)))
@click.option("--at", type=int, metavar="STEP",
              help="Plan at this step from the history up to it (default: the trace's last "
                   "step).")
@replan_options
@click.option("--recommend", is_flag=True,
              help="Instead of a plan, search re-plan intervals x load windows x redundant "
                   "slots (those not given) and the policies, and recommend the setting that "
                   "saves the most modeled time net of moves, or none.")
@state_window_option(" (--recommend: the adaptive policy's states)")
@time_model_options
@execution_options
@output_options
@click.option("--simulate", is_flag=True, hidden=True)
@click.option("--policies", hidden=True)
@click.option("--start", type=int, hidden=True)
def plan(trace: str, gpus: int | None, nodes: int, groups: int, replicas: int | None,
         redundant: int | None, planner: str, move_tolerance: float, from_scratch: bool,
         out: Path | None, sglang: Path | None, vllm_ascend: Path | None, estimate: str,
         at: int | None, replan_interval: int | None, load_window: int | None, predictor: str,
         recommend: bool, state_window: int | None, expert_params: int | None,
         bytes_per_param: int, token_seconds: float | None, gpu_tflops: float,
         intra_node_gbps: float, inter_node_gbps: float, rearrangement: str,
         stall_seconds: float, backend, workers, ray_address, as_json: bool,
         json_out: Path | None, force: bool, simulate: bool, **replayed) -> None:
    """Plan where every expert goes (and which get replicas) for the next re-plan interval,
    or (--recommend) which re-plan setting to run. See docs/placement.md; `moetrace replay`
    replays placement policies over the trace."""
    from moetrace import pipeline
    from moetrace.output import write_texts

    timing = dict(expert_params=expert_params, bytes_per_param=bytes_per_param,
                  token_seconds=token_seconds, gpu_tflops=gpu_tflops,
                  intra_node_gbps=intra_node_gbps, inter_node_gbps=inter_node_gbps,
                  rearrangement=rearrangement, stall_seconds=stall_seconds)
    writes = [name for name, path in (("-o", out), ("--sglang", sglang),
                                      ("--vllm-ascend", vllm_ascend)) if path]
    if simulate:  # the old mode switch: the same work is now `moetrace replay`
        if writes:
            raise ParameterError(f"--simulate reports results (table, --json, --json-out); "
                                 f"{writes[0]} writes a plan: run without --simulate for it")
        warn("plan --simulate is now `moetrace replay`; the flag goes in the next release")
        return click.get_current_context().invoke(
            replay, trace=trace, gpus=gpus, nodes=nodes, groups=groups, replicas=replicas,
            redundant=redundant, planner=planner, move_tolerance=move_tolerance,
            from_scratch=from_scratch, replan_interval=replan_interval,
            load_window=load_window, predictor=predictor, backend=backend, workers=workers,
            ray_address=ray_address, as_json=as_json, json_out=json_out, force=force,
            state_window=state_window, **timing, **replayed)
    given = [f"--{k.replace('_', '-')}" for k, v in replayed.items() if v is not None]
    if given:
        raise ParameterError(f"{given[0]} applies to `moetrace replay`")
    if estimate in FORMER:
        warn(f"--estimate {estimate} is now --estimate hindsight (a plan in hindsight: a "
             "reference other plans may beat, not a bound); the old name goes after 0.2")
        estimate = "hindsight"
    placement = cluster(gpus, nodes, groups, replicas, redundant, planner,
                        move_tolerance=move_tolerance, from_scratch=from_scratch)
    if recommend:
        if writes or at is not None:
            raise ParameterError(f"--recommend searches settings over the whole trace; "
                                 f"{writes[0] if writes else '--at'} is for one plan: run "
                                 "plan again with the recommended settings for it")
        check_outputs([(json_out, "file")], inputs=[trace], force=force)
        model = time_model(**timing)
        with progress_bar("searching re-plan settings", quiet=as_json) as progress:
            found = pipeline.recommend(
                trace, placement, intervals=[replan_interval] if replan_interval else None,
                windows=[load_window] if load_window else None, predictor=predictor,
                state_window=state_window, time_model=model,
                run=execution(backend, workers, ray_address, progress))
        emit_json(found.document(trace), to_stdout=as_json, path=json_out, inputs=[trace],
                  force=force)
        if not as_json:
            render_recommendation(found, f"{trace}: {placement.gpus} GPUs, re-plan settings "
                                         "by modeled MoE time saved")
        return
    check_outputs([(out, "file"), (sglang, "file"), (vllm_ascend, "file"),
                   (json_out, "file")], inputs=[trace], force=force)
    with progress_bar(f"planning from the {estimate} estimate", quiet=as_json) as progress:
        result = pipeline.plan(trace, placement, estimate=estimate, predictor=predictor, at=at,
                               replan_interval=replan_interval, load_window=load_window,
                               run=execution(backend, workers, ray_address, progress))
    doc = result.document(trace)
    texts = [(out, dumps(doc)), (sglang, dumps(result.sglang()) if sglang else None),
             (vllm_ascend, dumps(result.vllm_ascend()) if vllm_ascend else None),
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
    for path, what in ((out, "plan"), (sglang, "SGLang --init-expert-location file"),
                       (vllm_ascend, "vllm-ascend expert map")):
        if path is not None:
            console.print(f"wrote {what} [bold]{safe(path)}[/]", soft_wrap=True)
    if not writes:
        console.print("the plan was not written (pass -o FILE)", style="dim")


def render_recommendation(found: Recommendation, title: str, top: int = 8) -> None:
    """The best settings (at most ``top``), the static baseline, and the recommendation in
    one sentence."""
    from rich import box
    from rich.table import Table

    from moetrace.display import format_seconds as seconds

    table = Table(title=safe(title), title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False,
                  caption="every: re-plan interval; window: the load window (window policy); "
                          "slots: redundant; bal.: mean balancedness; move: seconds of moves; "
                          "net: compute seconds saved against the static placement less "
                          "moves",
                  caption_justify="left", caption_style="dim")
    for column in ("policy", "every", "window", "slots", "bal.", "moves", "move", "net"):
        table.add_column(column, justify="left" if column == "policy" else "right",
                         no_wrap=column != "policy", overflow="fold")

    def add(row: dict) -> None:
        table.add_row(row["policy"], "-" if row["interval"] is None else f"{row['interval']:,}",
                      "-" if row["window"] is None else f"{row['window']:,}",
                      str(row["redundant"]), _pct(row["balancedness"]), f"{row['moves']:,}",
                      seconds(row["move_seconds"]), seconds(row["net_seconds_saved"]))

    ranked = found.ranked()
    for row in ranked[:top]:
        add(row)
    add(found.static_row())
    console.print(table)
    if len(ranked) > top:
        console.print(f"{len(ranked) - top} more settings in --json", style="dim")
    runner = found.runner_up()
    console.print(found.sentence())
    if runner is not None and found.pays():
        from moetrace.placement.recommend import describe

        console.print(f"runner-up: {describe(runner)}, net {seconds(runner['net_seconds_saved'])}",
                      style="dim")
    for note in found.notes:
        warn(note)


from moetrace.cli.replay import replay  # noqa: E402  (registered after plan, listed after it)
