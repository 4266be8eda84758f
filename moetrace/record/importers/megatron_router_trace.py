"""Megatron-LM router traces: ``router_trace_rank{R}.jsonl`` from ``--moe-routing-trace-path``.

Each line is one router call: ``{"step", "block", "layer", "rank", "num_tokens", "topk",
"top_indices": [[expert ids of token 0], ...]}`` (megatron/core/transformer/moe/
router_trace.py). Counts are the bincount of ``top_indices`` per (step, layer); records of
several micro-batches and of all rank files add up. Only ``block == "decoder"`` records are
read (multi-token-prediction heads are separate routers, not training MoE layers).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from moetrace.errors import TraceError, first_line
from moetrace.record.importers.common import Imported
from moetrace.trace.schema import EXPERT, LAYER, STEP, TOKENS

FILE_PATTERN = "router_trace_rank*.jsonl"
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


def read_rows(src: Path) -> Imported:
    """Per (step, layer, expert) counts of every rank file, one streaming pass per file."""
    frames, top_k = [], None
    for file in trace_files(src):
        counts, k = _file_counts(file)
        frames.append(counts)
        top_k = max(top_k or 0, k or 0) or None
    return Imported(pl.concat(frames).lazy(), top_k=top_k,
                    extra={"source_files": len(frames), "steps_are": "training iterations"})


def _file_counts(file: Path) -> tuple[pl.DataFrame, int | None]:
    records = pl.scan_ndjson(file, schema=_SCHEMA).filter(
        pl.col("block").is_null() | (pl.col("block") == "decoder"))
    missing = records.select(
        *(pl.col(c).null_count().alias(c) for c in ("step", "layer", "top_indices")),
        pl.col("topk").max().alias("topk"), pl.len().alias("records"))
    counts = (
        records.filter(pl.col("top_indices").list.len() > 0)
        .select(pl.col("step").alias(STEP), pl.col("layer").alias(LAYER),
                pl.col("top_indices").alias(EXPERT))
        .explode(EXPERT).explode(EXPERT)
        .group_by(STEP, LAYER, EXPERT).agg(pl.len().cast(pl.Int64).alias(TOKENS))
    )
    try:
        summary, counts = pl.collect_all([missing, counts], engine="streaming")
    except pl.exceptions.PolarsError as exc:
        raise TraceError(f"not a Megatron router trace (JSON lines with step, layer, "
                         f"top_indices): {first_line(exc)}", path=file) from None
    if summary.item(0, "records") == 0:
        raise TraceError("no decoder router records", path=file)
    for col in ("step", "layer", "top_indices"):
        if summary.item(0, col):
            raise TraceError(f"{summary.item(0, col)} record(s) without '{col}'", path=file)
    return counts, summary.item(0, "topk")
