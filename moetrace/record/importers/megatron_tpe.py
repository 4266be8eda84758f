"""Megatron-LM tokens per expert: ``{save}/tokens_per_expert/rank{R}.jsonl``.

Written when training runs with ``--save-tokens-per-expert-interval N``
(megatron/training/activation_logging.py, ``ActivationLogger.save_tpe``): in every N-th
iteration, each rank appends one line per MoE layer,
``{"iter": 100, "block": "decoder", "layer": 3, "tpe": [[128, 64], [96, 80]]}``, where ``tpe``
holds, per micro-batch, the tokens that reached each of the rank's *local* experts (the
``tokens_per_expert`` argument of the experts' grouped ``linear_fc1``, after dispatch, so from
every rank of the expert-parallel group). ``iter`` is the iteration just completed (1-based).

The layout of the run maps local experts to global ids. Megatron orders expert ranks
``tp-ep-dp-pp`` (``expert_decoder_rank_generator`` in megatron/core/parallel_state.py, default
order): rank = etp_rank + ETP * (ep_rank + EP * (edp_rank + EDP * pp_rank)). With E experts
(``--experts``) and L local experts per rank (the length of a ``tpe`` row), EP = E / L, and the
world size is the number of rank files. Then:

- global expert = ep_rank * L + local index;
- ranks of one expert-tensor-parallel group hold the same tokens, so only ``etp_rank == 0``
  is read (``--layout etp=T``, default 1);
- expert-data-parallel replicas hold different tokens and are summed;
- with pipeline parallelism (``--layout pp=P``) a layer's number is its index within the
  stage, so the source layer is ``stage * 1000 + index`` (stages in order); virtual
  (interleaved) pipelines are not supported (their chunks' layers share numbers).

Micro-batches are summed per iteration. A layer with fewer micro-batches than the rank's other
layers in an iteration (a hook that missed a call, or one that fired again for activation
recomputation) makes the counts unreliable and is refused; ``block == "mtp"`` lines
(multi-token prediction) are left out.
"""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl

from moetrace.errors import ParameterError, TraceError
from moetrace.record.importers.common import ImportOptions, Imported, collect_records
from moetrace.trace.schema import EXPERT, LAYER, STEP, TOKENS

LAYOUT = {"ep": "expert-parallel size (checked against --experts)",
          "etp": "expert tensor-parallel size", "pp": "pipeline stages"}
FILE = re.compile(r"^rank(\d+)\.jsonl$")
STAGE_STRIDE = 1000  # source layer = stage * STAGE_STRIDE + index within the stage
_SCHEMA = {"iter": pl.Int64, "block": pl.String, "layer": pl.Int64,
           "tpe": pl.List(pl.List(pl.Int64))}


def rank_files(src: Path) -> dict[int, Path]:
    """rank -> file: ``src`` itself, its ``rank*.jsonl``, or those of its tokens_per_expert/."""
    if src.is_dir() and (src / "tokens_per_expert").is_dir():
        src = src / "tokens_per_expert"
    files = sorted(src.iterdir()) if src.is_dir() else [src]
    found = {int(m.group(1)): f for f in files if (m := FILE.match(f.name))}
    if not found:
        raise TraceError("no rank{R}.jsonl files (Megatron tokens_per_expert)", path=src)
    missing = sorted(set(range(max(found) + 1)) - set(found))
    if missing:
        named = ", ".join(f"rank{r}.jsonl" for r in missing[:5])
        raise TraceError(f"rank file(s) missing: {named}"
                         f"{' ...' if len(missing) > 5 else ''}; the layout needs every rank",
                         path=src)
    return found


def read_rows(src: Path, options: ImportOptions | None = None) -> Imported:
    """Counts per (iteration, layer, global expert), summed over micro-batches and replicas."""
    options = options or ImportOptions()
    files = rank_files(src)
    frames = {rank: _file_counts(file) for rank, file in files.items()}
    local = {rank: n for rank, (_, n) in frames.items()}
    n_local = local[0]
    odd = next((r for r, n in local.items() if n != n_local), None)
    if odd is not None:
        raise TraceError(f"{local[odd]} local experts per row, but rank0.jsonl has {n_local}",
                         path=files[odd])
    world, etp, pp = len(files), options.size("etp"), options.size("pp")
    if options.n_experts is None:
        raise ParameterError(f"--from megatron-tokens-per-expert needs --experts (the model's "
                             f"experts per layer): a rank's lines hold its {n_local} local "
                             "experts only")
    ep, remainder = divmod(options.n_experts, n_local)
    if remainder or options.size("ep", ep) != ep:
        raise ParameterError(f"--experts {options.n_experts} with {n_local} local experts per "
                             f"rank does not give a whole expert-parallel size"
                             if remainder else
                             f"--layout ep={options.size('ep')} but --experts "
                             f"{options.n_experts} / {n_local} local experts = {ep}")
    if world % (etp * ep * pp):
        raise ParameterError(f"{world} rank files do not split into etp={etp} x ep={ep} x "
                             f"pp={pp} (x expert data-parallel replicas)")
    edp = world // (etp * ep * pp)
    parts = []
    for rank, (frame, _) in frames.items():
        etp_rank, ep_rank, pp_rank = rank % etp, (rank // etp) % ep, rank // (etp * ep * edp)
        if etp_rank:
            continue  # the same tokens as its group's etp rank 0
        parts.append(frame.with_columns(
            (pl.col(EXPERT) + ep_rank * n_local).alias(EXPERT),
            (pl.col(LAYER) + pp_rank * STAGE_STRIDE).alias(LAYER)))
    return Imported(pl.concat(parts).lazy(), n_experts=options.n_experts,
                    extra={"source_files": world, "layout": {"etp": etp, "ep": ep, "pp": pp,
                                                              "edp": edp},
                           "steps_are": "training iterations (every "
                                        "--save-tokens-per-expert-interval)"})


def _file_counts(file: Path) -> tuple[pl.DataFrame, int]:
    """(iter, layer, local expert, tokens) of one rank file and its local expert count."""
    lines = pl.scan_ndjson(file, schema=_SCHEMA).filter(
        pl.col("block").is_null() | (pl.col("block") == "decoder"))
    checks = lines.select(
        *(pl.col(c).null_count().alias(c) for c in ("iter", "layer", "tpe")),
        pl.len().alias("records"),
        pl.col("tpe").list.eval(pl.element().list.len()).list.min().min().alias("short"),
        pl.col("tpe").list.eval(pl.element().list.len()).list.max().max().alias("long"))
    micro = lines.select("iter", "layer", pl.col("tpe").list.len().alias("micro"))
    counts = (lines.select(pl.col("iter").alias(STEP), pl.col("layer").alias(LAYER), "tpe")
              .explode("tpe")
              .with_columns(pl.int_ranges(0, pl.col("tpe").list.len(), dtype=pl.Int64)
                            .alias(EXPERT))
              .explode("tpe", EXPERT)
              .group_by(STEP, LAYER, EXPERT).agg(pl.col("tpe").sum().alias(TOKENS)))
    checks, micro, counts = collect_records(
        [checks, micro, counts], file, what="Megatron tokens_per_expert lines (iter, layer, tpe)",
        empty="no decoder lines", unit="line", required=("iter", "layer", "tpe"))
    short, long = checks.item(0, "short"), checks.item(0, "long")
    if not long or short != long:
        raise TraceError(f"'tpe' rows must all hold the same number of local experts, found "
                         f"{short} to {long}", path=file)
    _check_micro_batches(micro, file)
    return counts, int(long)


def _check_micro_batches(micro: pl.DataFrame, file: Path) -> None:
    grouped = micro.group_by("iter", "layer").agg(pl.col("micro").sum(), pl.len().alias("n"))
    twice = grouped.filter(pl.col("n") > 1).sort("iter", "layer")
    if twice.height:
        row = twice.row(0, named=True)
        raise TraceError(f"iteration {row['iter']}, layer {row['layer']} appears in "
                         f"{row['n']} lines (a restarted run appending the same iteration "
                         "again?); keep one and import again", path=file)
    grouped = (grouped
               .with_columns(pl.col("micro").max().over("iter").alias("most"),
                             pl.col("micro").min().over("iter").alias("least")))
    uneven = grouped.filter(pl.col("most") != pl.col("least")).sort("iter", "micro")
    if uneven.height:
        row = uneven.row(0, named=True)
        raise TraceError(f"iteration {row['iter']}, layer {row['layer']}: {row['micro']} "
                         f"micro-batch(es) where another layer has {row['most']} (a hook "
                         "missed a call or fired again for recomputation); the counts of "
                         "that iteration are not comparable", path=file)
