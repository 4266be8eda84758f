"""The lazy trace reader: one file, a glob, a directory of parts or hive rank partitions.

``read_trace`` validates the whole trace in one aggregating pass (no rows are kept in memory)
and returns a :class:`Trace`: the lazy long frame, its dimensions, metadata and a small
per-(step, layer) summary. Dense arrays come from :meth:`Trace.loads`, a step range at a time.
"""

from __future__ import annotations

import glob as globlib
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from moetrace.errors import TraceError, first_line
from moetrace.trace.schema import (
    EXPERT,
    KEY_COLUMNS,
    LAYER,
    METADATA_KEY,
    RANK,
    STEP,
    TOKENS,
    TraceMetadata,
)
from moetrace.trace.shares import Loads

_HIVE_RANK = re.compile(r"^rank=(\d+)$")
_WIDE_EXPERT = re.compile(r"^(?:expert_?|e)?(\d+)$")
_STEP_CHUNK_ROWS = 8_000_000  # rows gathered per pass when filling dense arrays


@dataclass(frozen=True)
class Trace:
    """A validated trace: lazy rows plus what is known about them without loading them."""

    path: str
    lazy: pl.LazyFrame  # canonical long rows: step, layer, expert, tokens (ranks summed on load)
    metadata: TraceMetadata
    n_layers: int
    n_experts: int
    has_rank: bool
    step_totals: pl.DataFrame  # one row per (step, layer): tokens routed in total, sorted

    @cached_property
    def steps(self) -> np.ndarray:
        """Sorted unique step numbers present in the trace."""
        return self.step_totals.get_column(STEP).unique(maintain_order=True).to_numpy()

    @property
    def n_steps(self) -> int:
        return len(self.steps)

    @cached_property
    def gaps(self) -> list[tuple[int, int]]:
        """Missing step ranges as (first missing, last missing), inclusive."""
        steps = self.steps
        jumps = np.nonzero(np.diff(steps) > 1)[0]
        return [(int(steps[i] + 1), int(steps[i + 1] - 1)) for i in jumps]

    def loads(self, layers: list[int] | None = None, start: int | None = None,
              stop: int | None = None) -> Loads:
        """Dense token counts for ``layers`` over steps ``start <= step <= stop`` (inclusive)."""
        layer_ids = tuple(range(self.n_layers)) if layers is None else tuple(int(x) for x in layers)
        bad = [x for x in layer_ids if not 0 <= x < self.n_layers]
        if bad:
            raise TraceError(f"no layer {bad[0]}: the trace has layers 0..{self.n_layers - 1}",
                             path=self.path)
        steps = self.steps
        lo = 0 if start is None else int(np.searchsorted(steps, start, side="left"))
        hi = len(steps) if stop is None else int(np.searchsorted(steps, stop, side="right"))
        steps = steps[lo:hi]
        counts = np.zeros((len(layer_ids), len(steps), self.n_experts), dtype=np.int64)
        if len(steps) == 0:
            return Loads(steps, counts, layer_ids)
        layer_pos = np.full(self.n_layers, -1, dtype=np.int64)
        layer_pos[list(layer_ids)] = np.arange(len(layer_ids))
        rows_per_step = max(1, len(self.step_totals) // max(1, self.n_steps)) * self.n_experts
        chunk = max(1, _STEP_CHUNK_ROWS // rows_per_step)
        for i in range(0, len(steps), chunk):
            part = steps[i:i + chunk]
            frame = (
                self.lazy.filter(pl.col(STEP).is_between(int(part[0]), int(part[-1])))
                .filter(pl.col(LAYER).is_in(list(layer_ids)))
                .select(STEP, LAYER, EXPERT, TOKENS)
                .collect()
            )
            t = np.searchsorted(part, frame.get_column(STEP).to_numpy())
            flat = (layer_pos[frame.get_column(LAYER).to_numpy()] * len(part) + t) * self.n_experts
            flat += frame.get_column(EXPERT).to_numpy()
            tokens = frame.get_column(TOKENS).to_numpy()
            size = len(layer_ids) * len(part) * self.n_experts
            if self.has_rank:  # partial counts of several ranks add up
                block = np.bincount(flat, weights=tokens, minlength=size).astype(np.int64)
            else:
                block = np.zeros(size, dtype=np.int64)
                block[flat] = tokens
            counts[:, i:i + chunk] = block.reshape(len(layer_ids), len(part), self.n_experts)
        return Loads(steps, counts, layer_ids)


def read_trace(path: str | Path) -> Trace:
    """Open and validate a trace; raise :class:`TraceError` naming the file and the problem."""
    label = str(path)
    files = _resolve_files(label)
    metadata = TraceMetadata()
    for file in files:
        found = _check_parquet_file(file)
        if found is not None and metadata == TraceMetadata():
            metadata = found
    lazy, has_rank = _scan(files, label)
    summary = _summarize(lazy, has_rank, label)
    n_layers, n_experts = _dimensions(summary, metadata, label)
    step_totals = (
        summary.group_by(STEP, LAYER).agg(pl.col(TOKENS).sum()).sort(STEP, LAYER)
    )
    _check_totals(step_totals, n_layers, label)
    return Trace(label, lazy, metadata, n_layers, n_experts, has_rank, step_totals)


def _resolve_files(label: str) -> list[Path]:
    """The Parquet files behind a path: itself, a glob's matches, or a directory's parts."""
    path = Path(label)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.parquet") if not _hidden(p, path))
        if not files:
            raise TraceError("directory holds no .parquet files", path=label)
        return files
    if path.is_file():
        return [path]
    if any(ch in label for ch in "*?["):
        files = sorted(Path(p) for p in globlib.glob(label, recursive=True) if Path(p).is_file())
        if not files:
            raise TraceError("no files match this pattern", path=label)
        return files
    raise TraceError("no such file or directory", path=label)


def _hidden(file: Path, root: Path) -> bool:
    """Temporary and hidden files (``.name.tmp`` from atomic writes) are never part of a trace."""
    return any(part.startswith(".") for part in file.relative_to(root).parts)


def _check_parquet_file(file: Path) -> TraceMetadata | None:
    """Fail early on empty, non-Parquet or truncated files; return the stored metadata if any."""
    if file.stat().st_size == 0:
        raise TraceError("empty file (0 bytes), not a Parquet trace", path=file)
    try:
        meta = pq.read_metadata(file)
    except Exception as exc:  # pyarrow raises several types for foreign or cut-off files
        raise TraceError(f"not a readable Parquet file (not Parquet, truncated or corrupt): "
                         f"{first_line(exc)}", path=file) from None
    raw = (meta.metadata or {}).get(METADATA_KEY.encode())
    if raw is None:
        return None
    try:
        return TraceMetadata.from_json(raw)
    except (ValueError, TypeError) as exc:
        raise TraceError(f"unreadable '{METADATA_KEY}' metadata: {first_line(exc)}",
                         path=file) from None


def _scan(files: list[Path], label: str) -> tuple[pl.LazyFrame, bool]:
    """One lazy long frame over all files, with ``rank`` from the data or from ``rank=R`` dirs."""
    frames = []
    has_rank = False
    for file in files:
        lazy = _to_long(pl.scan_parquet(file), file)
        names = lazy.collect_schema().names()
        hive = [m for part in file.parts if (m := _HIVE_RANK.match(part))]
        if RANK in names:
            has_rank = True
        elif hive:
            lazy = lazy.with_columns(pl.lit(int(hive[-1].group(1)), dtype=pl.Int32).alias(RANK))
            has_rank = True
        frames.append(lazy)
    if has_rank:
        frames = [f if RANK in f.collect_schema().names()
                  else f.with_columns(pl.lit(0, dtype=pl.Int32).alias(RANK)) for f in frames]
    cols = [*KEY_COLUMNS, TOKENS] + ([RANK] if has_rank else [])
    try:
        lazy = pl.concat([f.select(cols) for f in frames], how="vertical_relaxed")
    except pl.exceptions.PolarsError as exc:
        raise TraceError(f"part files do not agree on columns or types: {first_line(exc)}",
                         path=label) from None
    return lazy, has_rank


def _to_long(lazy: pl.LazyFrame, file: Path) -> pl.LazyFrame:
    """Check columns and types; turn the wide layout (one column per expert) into long rows."""
    schema = lazy.collect_schema()
    names = schema.names()
    for col in (STEP, LAYER):
        if col not in names:
            raise TraceError(f"missing required column '{col}' (columns: {', '.join(names)})",
                             path=file)
    if EXPERT not in names or TOKENS not in names:
        wide = [n for n in names if n not in (STEP, LAYER, RANK) and _WIDE_EXPERT.match(n)]
        if EXPERT in names or TOKENS in names or not wide:
            missing = EXPERT if EXPERT not in names else TOKENS
            raise TraceError(f"missing required column '{missing}' "
                             f"(columns: {', '.join(names)})", path=file)
        for n in wide:
            _check_count_type(n, schema[n], file)
        index = [c for c in (STEP, LAYER, RANK) if c in names]
        lazy = lazy.unpivot(on=wide, index=index, variable_name=EXPERT, value_name=TOKENS)
        lazy = lazy.with_columns(
            pl.col(EXPERT).str.extract(r"(\d+)$").cast(pl.Int32), pl.col(TOKENS).cast(pl.Float64)
            if any(schema[n].is_float() for n in wide) else pl.col(TOKENS).cast(pl.Int64))
        schema = lazy.collect_schema()
    for col in (STEP, LAYER, EXPERT) + ((RANK,) if RANK in names else ()):
        if not schema[col].is_integer():
            raise TraceError(f"column '{col}' must hold integers, found {schema[col]}", path=file)
    _check_count_type(TOKENS, schema[TOKENS], file)
    return lazy.with_columns(pl.col(STEP).cast(pl.Int64), pl.col(LAYER).cast(pl.Int32),
                             pl.col(EXPERT).cast(pl.Int32))


def _check_count_type(name: str, dtype: pl.DataType, file: Path) -> None:
    if not (dtype.is_integer() or dtype.is_float()):
        raise TraceError(f"column '{name}' must hold token counts (integers), found {dtype}",
                         path=file)


def _summarize(lazy: pl.LazyFrame, has_rank: bool, label: str) -> pl.DataFrame:
    """One streaming pass: per (step, layer[, rank]) row counts, token sums and checks.

    Distinct experts per group are counted with 64-bit masks per block of 64 experts (OR of
    2**(expert % 64)), which finds duplicate rows in constant memory, unlike ``n_unique``.
    """
    tokens, expert = pl.col(TOKENS), pl.col(EXPERT)
    is_float = lazy.collect_schema()[TOKENS].is_float()
    keys = [STEP, LAYER] + ([RANK] if has_rank else [])
    bit = pl.lit(2.0).pow((expert % 64).cast(pl.Float64)).cast(pl.UInt64)
    try:
        blocks = (
            lazy.group_by(*keys, (expert // 64).alias("block"))
            .agg(
                pl.len().alias("rows"),
                bit.bitwise_or().alias("mask"),
                expert.null_count().alias("null_experts"),
                expert.min().alias("min_expert"),
                expert.max().alias("max_expert"),
                (tokens.null_count() + (tokens.is_nan().sum() if is_float else 0))
                .alias("null_tokens"),
                tokens.min().alias("min_tokens"),
                ((tokens != tokens.floor()).sum() if is_float else pl.lit(0)).alias("fractional"),
                tokens.sum().alias(TOKENS),
            )
            .collect(engine="streaming")
        )
    except pl.exceptions.PolarsError as exc:
        raise TraceError(f"cannot read the trace's rows (truncated or corrupt?): "
                         f"{first_line(exc)}", path=label) from None
    if blocks.height == 0:
        raise TraceError("empty trace: no rows", path=label)
    summary = blocks.group_by(keys).agg(
        pl.col("rows").sum(),
        pl.col("mask").bitwise_count_ones().sum().alias("unique_experts"),
        pl.col("null_experts").sum(), pl.col("min_expert").min(), pl.col("max_expert").max(),
        pl.col("null_tokens").sum(),
        pl.col("min_tokens").min(), pl.col("fractional").sum(), pl.col(TOKENS).sum(),
    )
    _check_rows(summary, keys, label)
    return summary.with_columns(pl.col(TOKENS).cast(pl.Int64))


def _first_bad(summary: pl.DataFrame, condition: pl.Expr) -> dict | None:
    bad = summary.filter(condition).sort(STEP, LAYER)
    return bad.row(0, named=True) if bad.height else None


def _where(row: dict) -> str:
    rank = f", rank {row[RANK]}" if RANK in row else ""
    return f"step {row[STEP]}, layer {row[LAYER]}{rank}"


def _check_rows(summary: pl.DataFrame, keys: list[str], label: str) -> None:
    for col in keys:
        if summary.get_column(col).null_count():
            raise TraceError(f"column '{col}' has null values", path=label)
    checks = [
        (pl.col("null_experts") > 0, "null expert index"),
        (pl.col("null_tokens") > 0, "null or NaN token counts"),
        (pl.col("min_tokens") < 0, "negative token counts"),
        (pl.col("fractional") > 0, "fractional token counts (tokens must be whole numbers)"),
        (pl.col("min_expert") < 0, "negative expert index"),
        (pl.col(LAYER) < 0, "negative layer index"),
        (pl.col(STEP) < 0, "negative step"),
        (pl.col("unique_experts") < pl.col("rows"), "duplicate rows for the same "
         f"({', '.join(keys + [EXPERT])})"),
    ]
    for condition, problem in checks:
        row = _first_bad(summary, condition)
        if row is not None:
            raise TraceError(f"{problem} at {_where(row)}", path=label)


def _dimensions(summary: pl.DataFrame, metadata: TraceMetadata, label: str) -> tuple[int, int]:
    per_layer = summary.group_by(LAYER).agg(pl.col("max_expert").max()).sort(LAYER)
    layers = per_layer.get_column(LAYER).to_list()
    n_layers = layers[-1] + 1
    if len(layers) != n_layers:
        missing = sorted(set(range(n_layers)) - set(layers))[0]
        raise TraceError(f"layer {missing} has no rows; MoE layers must be numbered "
                         f"0..{n_layers - 1}", path=label)
    observed = per_layer.get_column("max_expert").to_numpy() + 1
    if metadata.n_experts is not None:
        if observed.max() > metadata.n_experts:
            layer = layers[int(np.argmax(observed))]
            raise TraceError(f"layer {layer} has expert {observed.max() - 1} but the metadata "
                             f"says {metadata.n_experts} experts per layer", path=label)
        return n_layers, int(metadata.n_experts)
    if observed.min() != observed.max():
        lo, hi = int(np.argmin(observed)), int(np.argmax(observed))
        raise TraceError(f"layers have different expert counts: layer {layers[lo]} has "
                         f"{observed[lo]}, layer {layers[hi]} has {observed[hi]}", path=label)
    return n_layers, int(observed[0])


def _check_totals(step_totals: pl.DataFrame, n_layers: int, label: str) -> None:
    """Every layer must route some tokens at every step the trace has."""
    per_step = step_totals.group_by(STEP).agg(pl.len().alias("layers")).sort(STEP)
    short = per_step.filter(pl.col("layers") < n_layers)
    if short.height:
        step = short.item(0, STEP)
        have = set(step_totals.filter(pl.col(STEP) == step).get_column(LAYER).to_list())
        layer = min(set(range(n_layers)) - have)
        raise TraceError(f"layer {layer} has no tokens at step {step}", path=label)
    row = _first_bad(step_totals, pl.col(TOKENS) == 0)
    if row is not None:
        raise TraceError(f"layer {row[LAYER]} has zero tokens in total at step {row[STEP]}",
                         path=label)
