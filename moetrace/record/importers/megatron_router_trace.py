"""Megatron-LM router traces: ``router_trace_rank{R}.jsonl`` from ``--moe-routing-trace-path``.

Each line is one router call: ``{"step", "block", "layer", "rank", "num_tokens", "topk",
"top_indices": [[expert ids of token 0], ...]}`` (megatron/core/transformer/moe/
router_trace.py). Counts are the bincount of ``top_indices`` per (step, layer); records of
several micro-batches and of all rank files add up. Only ``block == "decoder"`` records are
read (multi-token-prediction heads are separate routers, not training MoE layers).

The tracer leaves a router call out of the file when the router returns a boolean routing map
whose token choices are uneven (capacity dropping): it cannot reshape them into ``topk``
columns and returns without a record. Every micro-batch passes through every MoE layer of a
rank, so a layer with fewer records than the rank's other layers at a step has lost some: the
import is refused with the first such place, since those tokens cannot be counted.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from moetrace.errors import TraceError
from moetrace.record.importers.common import ImportOptions, Imported, collect_records
from moetrace.trace.schema import EXPERT, LAYER, STEP, TOKENS

FILE_PATTERN = "router_trace_rank*.jsonl"
LAYOUT: dict[str, str] = {}
_SCHEMA = {"step": pl.Int64, "block": pl.String, "layer": pl.Int64, "topk": pl.Int64,
           "top_indices": pl.List(pl.List(pl.Int64))}


def trace_files(src: Path) -> list[Path]:
    """The rank files behind ``src``: itself, or a directory's ``router_trace_rank*.jsonl``."""
    if src.is_dir():
        files = sorted(src.glob(FILE_PATTERN))
        if not files:
            raise TraceError(f"directory holds no {FILE_PATTERN} files", path=src)
        return files
    return [src]


def read_rows(src: Path, options: ImportOptions | None = None) -> Imported:
    """Per (step, layer, expert) counts of every rank file, one streaming pass per file."""
    frames, top_k = [], None
    for file in trace_files(src):
        counts, k = _file_counts(file)
        frames.append(counts)
        top_k = max(top_k or 0, k or 0) or None
    return Imported(pl.concat(frames).lazy(), top_k=top_k,
                    extra={"source_files": len(frames),
                           "steps_are": "router steps (training iterations when traced in "
                                        "training; say --steps-are for an inference trace)"})


def _file_counts(file: Path) -> tuple[pl.DataFrame, int | None]:
    records = pl.scan_ndjson(file, schema=_SCHEMA).filter(
        pl.col("block").is_null() | (pl.col("block") == "decoder"))
    missing = records.select(
        *(pl.col(c).null_count().alias(c) for c in ("step", "layer", "top_indices")),
        pl.col("topk").max().alias("topk"), pl.len().alias("records"))
    calls = records.group_by("step", "layer").agg(pl.len().alias("calls"))
    counts = (
        records.filter(pl.col("top_indices").list.len() > 0)
        .select(pl.col("step").alias(STEP), pl.col("layer").alias(LAYER),
                pl.col("top_indices").alias(EXPERT))
        .explode(EXPERT).explode(EXPERT)
        .group_by(STEP, LAYER, EXPERT).agg(pl.len().cast(pl.Int64).alias(TOKENS))
    )
    summary, calls, counts = collect_records(
        [missing, calls, counts], file,
        what="a Megatron router trace (JSON lines with step, layer, top_indices)",
        empty="no decoder router records", unit="record",
        required=("step", "layer", "top_indices"))
    _check_skipped(calls, file)
    return counts, summary.item(0, "topk")


def _check_skipped(calls: pl.DataFrame, file: Path) -> None:
    """Every layer of a rank sees each micro-batch once per step: fewer calls = lost records.

    A layer missing entirely at a step counts too (its call count there is 0).
    """
    layers = calls.get_column("layer").unique()
    full = (calls.select("step").unique().join(layers.to_frame(), how="cross")
            .join(calls, on=["step", "layer"], how="left").fill_null(0)
            .with_columns(pl.col("calls").max().over("step").alias("most")))
    short = full.filter(pl.col("calls") < pl.col("most")).sort("step", "layer")
    if short.height:
        row = short.row(0, named=True)
        steps = short.get_column("step").n_unique()
        raise TraceError(
            f"step {row['step']}, layer {row['layer']}: {row['calls']} router record(s) where "
            f"the rank's other layers have {row['most']} ({steps} step(s) affected). "
            "Megatron's tracer leaves out a router call whose token choices are uneven "
            "(capacity dropping), so these tokens cannot be counted; trace with "
            "--moe-expert-capacity-factor unset, or record with moetrace's own recorder",
            path=file)
