"""`moetrace record`: simulate a run, record a real one, train the demo, or import a dump.

Exactly one source per call: ``--simulate PRESET``, ``--demo``, ``--from FORMAT SRC`` or a
training command after ``--``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from moetrace.cli.app import app, console
from moetrace.errors import ParameterError


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def record(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("-o", "--out", help="Output trace file (.parquet) or "
                                      "directory (recording a command writes rank=R/ parts).")],
    simulate: Annotated[Optional[str], typer.Option(
        "--simulate", metavar="PRESET",
        help="Simulate a GPT-3-style run: gpt3-125m or gpt3-350m.")] = None,
    demo: Annotated[bool, typer.Option(
        "--demo", help="Train the small real MoE GPT on CPU and record its load trace.")] = False,
    from_format: Annotated[Optional[str], typer.Option(
        "--from", metavar="FORMAT",
        help="Import another tool's dump: megatron-router-trace, sglang or csv (SRC follows).")
    ] = None,
    steps: Annotated[Optional[int], typer.Option(help="Steps to simulate or train.")] = None,
    seed: Annotated[int, typer.Option(help="Random seed (simulation and demo).")] = 0,
    layers: Annotated[Optional[int], typer.Option(help="Override the preset's MoE layers.")] = None,
    experts: Annotated[Optional[int], typer.Option(help="Override experts per layer.")] = None,
    top_k: Annotated[Optional[int], typer.Option("--top-k", help="Override top-k.")] = None,
    tokens_per_step: Annotated[Optional[int], typer.Option(
        "--tokens-per-step", help="Override tokens per layer per step.")] = None,
    flush_every: Annotated[int, typer.Option(
        "--flush-every", help="Steps per part file when recording (crash safety).")] = 100,
) -> None:
    """Get a trace: simulate one, record a real training run, or import one.

    Record a command:  moetrace record -o DIR -- python train.py --lr 3e-4
    """
    sources = [s for s in (simulate, demo or None, from_format, ctx.args or None) if s]
    if len(sources) != 1:
        raise ParameterError("give exactly one of --simulate PRESET, --demo, --from FORMAT SRC, "
                             "or a training command after --")
    if simulate:
        from moetrace.simulate import simulate_trace

        path = simulate_trace(out, preset=simulate, steps=steps, seed=seed, layers=layers,
                              experts=experts, top_k=top_k, tokens_per_step=tokens_per_step)
        console.print(f"wrote simulated trace [bold]{path}[/]")
    elif from_format:
        raise ParameterError("--from is not available yet (record issue)")
    elif demo:
        raise ParameterError("--demo is not available yet (record issue)")
    else:
        raise ParameterError("recording a command is not available yet (record issue)")
