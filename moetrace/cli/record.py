"""`moetrace record`: simulate a run, record a real one, train the demo, or import a dump.

One rule picks the source: a call names exactly one of :data:`SOURCES`, and gives only the
options that source reads (:data:`READS`). Everything after the first ``--`` is the training
command, passed on untouched; before it, options are parsed as for every command, so an
unknown one is a usage error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from moetrace.defaults import DEMO_STEPS, FLUSH_EVERY
from moetrace.cli.app import command, console, warn
from moetrace.cli.options import PathType, output_options
from moetrace.cli.render import emit_json, safe
from moetrace.errors import ParameterError
from moetrace.output import check_outputs
from moetrace.simulate.config import preset_names

#: The sources of a trace, as a user names them; a call gives exactly one.
SOURCES = {"simulate": "--simulate PRESET", "demo": "--demo", "from": "--from FORMAT SRC",
           "command": "a training command after --"}
#: The options each source reads; one given to a source that does not read it is refused.
READS = {
    "simulate": {"steps", "seed", "layers", "experts", "top_k", "tokens_per_step"},
    "demo": {"steps", "seed", "flush_every", "every"},
    "from": {"experts", "top_k", "tokens_per_step", "layout", "steps_are"},
    "command": {"flush_every", "every", "count_eval"},
}
_COMMAND = "moetrace.record.command"  # where the words after -- wait for the command body


class RecordCommand(click.Command):
    """`record`'s parsing: the words after the first ``--`` are the training command, kept
    whole (its own options included); the words before are parsed as usual."""

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        if "--" in args:
            cut = args.index("--")
            args, ctx.meta[_COMMAND] = args[:cut], args[cut + 1:]
        return super().parse_args(ctx, args)

    def collect_usage_pieces(self, ctx) -> list[str]:
        return [*super().collect_usage_pieces(ctx), "[-- COMMAND...]"]


@command(cls=RecordCommand)
@click.argument("src", required=False)
@click.option("-o", "--out", type=PathType, metavar="OUT", required=True,
              help="Output trace: a .parquet file, or a directory of rank=R/ parts when "
                   "recording a command (or --demo into a directory).")
@click.option("--simulate", metavar="PRESET",
              help=f"Simulate a preset run: {preset_names()} (docs/simulation.md).")
@click.option("--demo", is_flag=True,
              help="Train the small real MoE GPT on CPU and record its load trace.")
@click.option("--from", "from_format", metavar="FORMAT",
              help="Import another tool's dump SRC (formats: docs/importing.md).")
@click.option("--steps", type=int, help="Steps to simulate or train.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Random seed (simulation and demo).")
@click.option("--layers", type=int, help="Override the preset's MoE layers.")
@click.option("--experts", type=int,
              help="Override the preset's experts per layer, or state an import's.")
@click.option("--top-k", type=int, help="Experts per token: overrides the preset, or states it "
              "for an import whose format does not say.")
@click.option("--tokens-per-step", type=int, help="Tokens per layer per step: overrides the "
              "preset, or states it for an import.")
@click.option("--layout", metavar="KEY=SIZE,...", help="Parallel layout of the run that wrote "
              "an import, for per-rank formats (e.g. pp=2,etp=1).")
@click.option("--steps-are", metavar="TEXT", help="What an imported step is, where the format "
              "cannot say (e.g. 'decode steps' for an inference trace).")
@click.option("--flush-every", type=int, default=FLUSH_EVERY, show_default=True,
              help="Steps per part file when recording (crash safety; a part is what watch "
                   "sees).")
@click.option("--every", type=int, default=1, show_default=True, metavar="K",
              help="Record every K-th training step only (a sampled trace; step numbers stay "
                   "training steps).")
@click.option("--count-eval", is_flag=True,
              help="Also record eval forwards, into the sibling trace OUT-eval.")
@output_options
@click.pass_context
def record(ctx: click.Context, src: str | None, out: Path, simulate: str | None, demo: bool,
           from_format: str | None, steps: int | None, seed: int, layers: int | None,
           experts: int | None, top_k: int | None, tokens_per_step: int | None,
           layout: str | None, steps_are: str | None, flush_every: int, every: int,
           count_eval: bool, as_json: bool, json_out: Path | None, force: bool) -> None:
    """Get a trace: simulate one, record a real training run, train the demo, or import one.

    Record a command:  moetrace record -o DIR -- python train.py --lr 3e-4
    """
    job = ctx.meta.get(_COMMAND)
    if src is not None and from_format is None:
        raise ParameterError(f"SRC '{src}' is read only with --from FORMAT; to record a "
                             f"training command, put it after --: moetrace record -o DIR -- "
                             f"{src} ...")
    source = _source(ctx, {"simulate": simulate is not None, "demo": demo,
                           "from": from_format is not None, "command": job is not None})
    if source == "from" and src is None:
        raise ParameterError(f"--from {from_format} takes exactly one SRC (the file or "
                             "directory to import)")
    inputs = [src] if src is not None else []
    if json_out is not None:  # all outputs together, before any work (the library checks -o)
        check_outputs(_outputs(source, out, count_eval, json_out), inputs=inputs, force=force)
    # stdout: the JSON, or lines that name the trace (kept whole: the path stays copyable)
    say = (lambda text: None) if as_json else \
        (lambda text: console.print(text, soft_wrap=True))
    run = None  # the recorded command's run, which has read its trace already
    if source == "simulate":
        from moetrace.simulate import simulate_trace

        _parquet_file(out)
        path = simulate_trace(out, preset=simulate, steps=steps, seed=seed, layers=layers,
                              experts=experts, top_k=top_k, tokens_per_step=tokens_per_step,
                              force=force)
        say(f"wrote simulated trace [bold]{safe(path)}[/]")
        about: dict[str, Any] = {"preset": simulate, "seed": seed}
    elif source == "from":
        from moetrace.record.importers import import_trace

        _parquet_file(out)
        path = import_trace(from_format, src, out, n_experts=experts, top_k=top_k,
                            tokens_per_step=tokens_per_step, layout=layout,
                            steps_are=steps_are, force=force)
        say(f"imported {safe(from_format)} dump {safe(src)} into [bold]{safe(path)}[/]")
        about = {"format": from_format, "src": src}
    elif source == "demo":
        path, about = _train_demo(out, steps=steps, seed=seed, flush_every=flush_every,
                                  every=every, force=force, say=say)
    else:
        run = _record_command(job, out, flush_every=flush_every, count_eval=count_eval,
                              every=every, force=force, say=say, as_json=as_json)
        path = run.out_dir
        about = {"command": list(job), "exit_code": run.returncode, "ranks": run.ranks,
                 "problem": run.problem}
    if as_json or json_out is not None:
        from moetrace.written import WrittenTrace, written_trace

        if run is None:
            trace = written_trace(path).to_json()
        else:
            trace = WrittenTrace.nothing_json(path) if run.trace is None else \
                WrittenTrace.of(run.trace).to_json()
        doc = {"schema": "moetrace.record", "version": 1, "source": _JSON_SOURCE[source],
               **trace, **about}
        emit_json(doc, to_stdout=as_json, path=json_out, inputs=inputs, force=force)
    if run is not None and run.returncode:
        raise SystemExit(run.returncode)  # the command's own exit status


#: The source as the JSON document names it.
_JSON_SOURCE = {"simulate": "simulate", "demo": "demo", "from": "import", "command": "command"}


def _source(ctx: click.Context, given: dict[str, bool]) -> str:
    """The one source named (see :data:`SOURCES`), after checking that every option given on
    the command line is one it reads (see :data:`READS`)."""
    named = [name for name, present in given.items() if present]
    if len(named) != 1:
        got = f" (got {' and '.join(SOURCES[n] for n in named)})" if named else ""
        *first, last = SOURCES.values()
        raise ParameterError(f"give exactly one source: {', '.join(first)}, or {last}{got}")
    source = named[0]
    for param in ctx.command.params:
        read_by = [s for s, names in READS.items() if param.name in names]
        given = ctx.get_parameter_source(param.name)  # COMMANDLINE, ENVIRONMENT, DEFAULT...
        if not read_by or source in read_by or given is None or given.name == "DEFAULT":
            continue
        flag = max(param.opts, key=len)
        raise ParameterError(f"{flag} does not apply to {SOURCES[source]} (only to "
                             f"{' and '.join(SOURCES[s] for s in read_by)})")
    return source


def _outputs(source: str, out: Path, count_eval: bool, json_out: Path | None) -> list:
    """Every output of the call, to check together before any work (moetrace.output)."""
    recording = source == "command" or (source == "demo" and out.suffix != ".parquet")
    evals = []
    if count_eval:
        from moetrace.record import eval_dir  # needs torch, as recording does

        evals = [(eval_dir(out), "dir")]
    return [(out, "dir" if recording else "file"), *evals, (json_out, "file")]


def _parquet_file(out: Path) -> None:
    """A trace file is Parquet: an output named otherwise (x.csv) is refused, not misnamed."""
    if out.suffix.lower() != ".parquet":
        raise ParameterError(f"{out}: a trace is written as Parquet; name the output "
                             "*.parquet")


def _record_command(job: list[str], out: Path, *, flush_every: int, count_eval: bool,
                    every: int, force: bool, say, as_json: bool):
    """Run the training command recorded and say where the trace went. With --json the
    command's own output goes to stderr, so that stdout holds the JSON document alone."""
    from moetrace.record import record_command

    run = record_command(job, out, flush_every=flush_every, count_eval=count_eval,
                         every=every, force=force, stdout=2 if as_json else None)
    if run.trace is None:
        warn(run.problem)
    else:
        t = run.trace
        say(f"recorded trace [bold]{safe(run.out_dir)}[/]: {t.n_steps} steps x {t.n_layers} "
            f"MoE layers x {t.n_experts} experts from {run.ranks} rank(s), "
            f"{safe(t.metadata.model or 'unknown model')}")
    if run.returncode:
        warn(f"the command exited with status {run.returncode}")
    return run


def _train_demo(out: Path, *, steps: int | None, seed: int, flush_every: int, every: int,
                force: bool, say) -> tuple[Path, dict[str, Any]]:
    """Train the demo MoE GPT (3000 steps unless told) with a progress bar, then one line."""
    from moetrace.cli.progress import progress_bar
    from moetrace.record import train_demo

    steps = DEMO_STEPS if steps is None else steps
    with progress_bar("training the demo MoE GPT") as update:
        def progress(done: int, total: int, loss: float) -> None:
            update(done, total, f"loss {loss:.2f}")

        result = train_demo(out, steps=steps, seed=seed, flush_every=flush_every,
                            every=every, progress=progress, force=force)
    cfg = result.config
    first, last = result.loss_change
    sampled = f", every {every} steps recorded" if every > 1 else ""
    say(f"recorded demo trace [bold]{safe(result.path)}[/]: {result.steps} steps x "
        f"{cfg.n_layers} MoE layers x {cfg.n_experts} experts (top-{cfg.top_k}, "
        f"{cfg.tokens_per_step} tokens/step{sampled}); loss {first:.2f} -> {last:.2f}")
    return result.path, {"seed": seed, "loss": {"first": first, "last": last}}
