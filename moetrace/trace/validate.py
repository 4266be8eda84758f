"""The validation pass: one streaming pass over every file's row groups that checks every
value and keeps one summary row per (step, layer[, rank]), never the rows themselves.

Per batch: nulls, id ranges, token counts that are whole, non-negative and below the limit.
Per key: rows, distinct experts (fewer than rows: a duplicate), the largest expert and the
token sum, folded as the summary grows. Then: duplicates of keys split over batches, exact
sums where counts come near the limit, the dimensions and every step's totals.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from moetrace.errors import TraceError
from moetrace.trace.files import reading
from moetrace.trace.layout import FileLayout
from moetrace.trace.schema import (
    EXPERT,
    LAYER,
    MAX_EXPERTS,
    MAX_LAYERS,
    MAX_RANK,
    MAX_STEP,
    MAX_TOKENS,
    RANK,
    STEP,
    TOKENS,
    TraceMetadata,
)

_BATCH_ROWS = 4_000_000  # rows per record batch of the validation pass
_FOLD_ROWS = 4_000_000  # key-summary rows pending (and at least the folded table's) before a fold


def _batches(layout: FileLayout, row_groups: list[int] | None = None) -> Iterator[pl.DataFrame]:
    """The file's rows in batches of whole row groups (consecutive ones packed up to
    ``_BATCH_ROWS`` rows; a larger one alone, in batches of that size), pages verified
    against their checksums; ``row_groups``: only those."""
    with reading(layout.file):
        parquet = pq.ParquetFile(layout.file, page_checksum_verification=True)
        groups = range(parquet.num_row_groups) if row_groups is None else row_groups
        sizes = {g: parquet.metadata.row_group(g).num_rows for g in groups}
        pack: list[int] = []
        packed = 0  # rows in pack
        for group in [*groups, None]:
            if pack and (group is None or packed + sizes[group] > _BATCH_ROWS):
                yield pl.from_arrow(parquet.read_row_groups(pack))
                pack, packed = [], 0
            if group is None:
                break
            if sizes[group] > _BATCH_ROWS:
                for batch in parquet.iter_batches(batch_size=_BATCH_ROWS, row_groups=[group]):
                    yield pl.from_arrow(pa.Table.from_batches([batch]))
            else:
                pack.append(group)
                packed += sizes[group]


def validate(layouts: list[FileLayout], has_rank: bool, metadata: TraceMetadata,
             label: str) -> tuple[int, int, pl.DataFrame]:
    """Check every row of ``layouts``' files in one pass; the trace's layers, experts per
    layer and tokens per (step, layer), sorted. Raises :class:`TraceError` naming ``label``
    (or the file at fault) and the first problem."""
    summary = _summarize(layouts, has_rank, label)
    n_layers, n_experts = _dimensions(summary, metadata, label)
    step_totals = summary.group_by(STEP, LAYER).agg(pl.col(TOKENS).sum()).sort(STEP, LAYER)
    _check_totals(step_totals, n_layers, label)
    return n_layers, n_experts, step_totals


def _key_summary(frame: pl.LazyFrame, keys: list[str]) -> pl.DataFrame:
    """Per key of one batch: rows, distinct experts (fewer than rows: a duplicate), the
    largest expert, the token sum, and ``pieces`` = 1 (batches that held the key, once
    folded)."""
    return (
        frame.group_by(keys)
        .agg(pl.len().alias("rows"), pl.col(EXPERT).n_unique().alias("unique_experts"),
             pl.col(EXPERT).max().alias("max_expert"), pl.col(TOKENS).sum(),
             pl.lit(1, dtype=pl.UInt32).alias("pieces"))
        .collect()
    )


def _fold(parts: list[pl.DataFrame], keys: list[str]) -> pl.DataFrame:
    """Key summaries of several batches as one: rows, distinct experts, tokens and pieces
    added (a key in two batches has pieces > 1: see :func:`_check_split_keys`)."""
    if len(parts) == 1:
        return parts[0]
    return (pl.concat(parts).group_by(keys)
            .agg(pl.col("rows").sum(), pl.col("unique_experts").sum(),
                 pl.col("max_expert").max(), pl.col(TOKENS).sum(), pl.col("pieces").sum()))


def _summarize(layouts: list[FileLayout], has_rank: bool, label: str) -> pl.DataFrame:
    """One pass over every file's batches: column checks (nulls, ranges, token values) per
    batch, then per (step, layer[, rank]) row counts, distinct experts and token sums; rows
    are never kept. Memory: the summary (one row per key), folded as it grows."""
    keys = [STEP, LAYER] + ([RANK] if has_rank else [])
    parts, pending = [], 0  # pending: summary rows added since the last fold
    largest = 0.0  # the largest token count seen: bounds every sum (see _check_sums)
    for layout in layouts:
        for frame in _batches(layout):
            if frame.height == 0:  # a row group of no rows has no values (nor min or max)
                continue
            with reading(layout.file):
                if layout.wide:  # unpivoted first; then the checks see one row per expert
                    frame = layout.long(frame.lazy(), has_rank).collect()
                    rows = frame.lazy().with_columns(
                        pl.col([c for c in (LAYER, EXPERT, RANK) if c in frame.columns])
                        .cast(pl.Int32), pl.col(TOKENS).cast(pl.Int64))
                else:
                    rows = layout.long(frame.lazy(), has_rank, pl.Int32, pl.Int64)
                largest = max(largest, _check_columns(frame, layout, keys, label))
                parts.append(_key_summary(rows, keys))
                pending += parts[-1].height
                if pending > max(_FOLD_ROWS, parts[0].height):  # at most twice the summary,
                    parts, pending = [_fold(parts, keys)], 0     # folds linear in all
                    pa.default_memory_pool().release_unused()
    pa.default_memory_pool().release_unused()
    summary = _fold(parts, keys) if parts else pl.DataFrame()
    if summary.height == 0:
        raise TraceError("empty trace: no rows", path=label)
    row = _first_bad(summary, pl.col("unique_experts") < pl.col("rows"))
    if row is None and summary.get_column("pieces").max() > 1:
        row = _check_split_keys(layouts, has_rank, keys, summary.filter(pl.col("pieces") > 1),
                                label)
    if row is not None:
        raise TraceError(f"duplicate rows for the same ({', '.join(keys + [EXPERT])}) at "
                         f"{_where(row)}", path=label)
    # every (step, layer) sum is at most its rows (all ranks) times the largest count
    bound = summary.group_by(STEP, LAYER).agg(pl.col("rows").sum()).get_column("rows").max()
    if bound * largest >= MAX_TOKENS:
        _check_sums(layouts, has_rank, keys, label)
    return summary.drop("pieces")


def _check_split_keys(layouts: list[FileLayout], has_rank: bool, keys: list[str],
                      split: pl.DataFrame, label: str) -> dict | None:
    """The first key held by several batches whose rows repeat an expert, or None. Reads
    only the row groups whose statistics allow one of ``split``'s keys (files that moetrace
    writes keep every key in one row group, so this reads nothing for them). Per key and
    block of 64 experts it keeps a bitmask of the experts seen, so memory stays that of the
    split keys' summary even when every key is split (an unsorted file)."""
    split = split.select(keys)
    points = {c: split.get_column(c).to_numpy() for c in (STEP, LAYER)}
    expert = pl.col(EXPERT)
    bit = pl.lit(2, dtype=pl.UInt64).pow((expert % 64).cast(pl.UInt32))
    blocks, pending = [], 0
    for layout in layouts:
        for frame in _batches(layout, _groups_holding(layout, points)):
            with reading(layout.file):
                rows = layout.long(frame.lazy(), has_rank, pl.Int32, pl.Int64)
                blocks.append(rows.join(split.lazy(), on=keys, how="semi")
                              .group_by(*keys, (expert // 64).alias("block"))
                              .agg(pl.len().alias("rows"), bit.bitwise_or().alias("mask"))
                              .collect())
            pending += blocks[-1].height
            if pending > max(_FOLD_ROWS, blocks[0].height):
                blocks, pending = [_fold_blocks(blocks, keys)], 0
    if not blocks:
        return None
    per_key = _fold_blocks(blocks, keys).group_by(keys).agg(
        pl.col("rows").sum(), pl.col("mask").bitwise_count_ones().sum().alias("unique_experts"))
    return _first_bad(per_key, pl.col("unique_experts") < pl.col("rows"))


def _fold_blocks(blocks: list[pl.DataFrame], keys: list[str]) -> pl.DataFrame:
    if len(blocks) == 1:
        return blocks[0]
    return (pl.concat(blocks).group_by(*keys, "block")
            .agg(pl.col("rows").sum(), pl.col("mask").bitwise_or()))


#: split keys beyond which every row group is read rather than matched against each of them
_SPLIT_MATCH_LIMIT = 100_000


def _groups_holding(layout: FileLayout, points: dict[str, np.ndarray]) -> list[int]:
    """Row groups of ``layout``'s file whose step and layer statistics admit one of the
    (step, layer) ``points`` (every row group where a statistic is missing, or when the
    points are too many to match one by one)."""
    with reading(layout.file):
        meta = pq.ParquetFile(layout.file).metadata
    groups = list(range(meta.num_row_groups))
    if len(points[STEP]) > _SPLIT_MATCH_LIMIT:
        return groups
    names = [meta.schema.column(i).name for i in range(meta.num_columns)]
    chosen = []
    for group in groups:
        inside = np.ones(len(points[STEP]), dtype=bool)
        for col in (STEP, LAYER):
            stats = meta.row_group(group).column(names.index(col)).statistics \
                if col in names else None
            if stats is not None and stats.has_min_max:
                inside &= (points[col] >= stats.min) & (points[col] <= stats.max)
        if inside.any():
            chosen.append(group)
    return chosen


_RANGES = {STEP: (0, MAX_STEP, "step"), LAYER: (0, MAX_LAYERS - 1, "layer index"),
           EXPERT: (0, MAX_EXPERTS - 1, "expert index"), RANK: (0, MAX_RANK, "rank")}


def _check_columns(frame: pl.DataFrame, layout: FileLayout, keys: list[str], label: str) -> float:
    """Column checks of one batch (values as stored, before any narrowing): nulls, index
    ranges, token counts that are not whole non-negative numbers below the limit. Raises
    naming the first bad row; returns the batch's largest token count."""
    def first(condition: pl.Expr) -> dict:
        return frame.filter(condition).sort(STEP, LAYER, nulls_last=True).row(0, named=True)

    def where(row: dict, col: str) -> str:
        if col in (STEP, LAYER) or row.get(STEP) is None or row.get(LAYER) is None:
            return ""
        return f" at step {row[STEP]}, layer {row[LAYER]}" + \
            (f", rank {row[RANK]}" if RANK in row and col != RANK else "")

    for col in [c for c in keys + [EXPERT] if c in frame.columns]:
        values = frame.get_column(col)
        if values.null_count():
            if col == EXPERT:
                raise TraceError(f"null expert index{where(first(values.is_null()), col)}",
                                 path=label)
            raise TraceError(f"column '{col}' has null values", path=label)
        low, high, what = _RANGES[col]
        lo, hi = values.min(), values.max()
        if lo < low or hi > high:
            row = first((pl.col(col) < low) | (pl.col(col) > high))
            if row[col] < low:
                raise TraceError(f"negative {what}{where(row, col)}", path=label)
            raise TraceError(f"{what} {row[col]:,} is past the largest, {high:,}"
                             f"{where(row, col)}", path=label)
    tokens = frame.get_column(TOKENS)
    col = pl.col(TOKENS)
    checks = [(col.is_null(), "null or NaN token counts", tokens.null_count() > 0)]
    if tokens.dtype.is_float():
        checks += [(col.is_nan(), "null or NaN token counts", tokens.is_nan().any()),
                   (col != col.floor(), "fractional token counts (tokens must be whole "
                                        "numbers)", (tokens != tokens.floor()).any())]
    low, high = tokens.min(), tokens.max()
    checks += [(col < 0, "negative token counts", low is not None and low < 0),
               (col.cast(pl.Float64) >= MAX_TOKENS, f"a token count of {MAX_TOKENS:,} (2^62) "
                "or more", high is not None and float(high) >= MAX_TOKENS)]
    for condition, problem, bad in checks:
        if bad:
            raise TraceError(f"{problem}{where(first(condition), TOKENS)}", path=label)
    return float(high or 0)


def _check_sums(layouts: list[FileLayout], has_rank: bool, keys: list[str], label: str) -> None:
    """Exact check that no step's total reaches the limit (only when the cheap bound of
    :func:`_summarize` could not rule it out: counts near 2^62)."""
    parts = []
    for layout in layouts:
        for frame in _batches(layout):
            with reading(layout.file):
                parts.append(layout.long(frame.lazy(), has_rank).group_by(keys).agg(
                    pl.col(TOKENS).cast(pl.Float64).sum().alias("float_tokens")).collect())
    sums = pl.concat(parts).group_by(keys).agg(pl.col("float_tokens").sum())
    row = _first_bad(sums, pl.col("float_tokens") >= MAX_TOKENS)
    if row is not None:
        raise TraceError(f"token counts that add up to {MAX_TOKENS:,} (2^62) or more in one "
                         f"step and layer: they would overflow, at {_where(row)}", path=label)
    totals = sums.group_by(STEP, LAYER).agg(pl.col("float_tokens").sum())
    row = _first_bad(totals, pl.col("float_tokens") >= MAX_TOKENS)
    if row is not None:
        raise TraceError(f"token counts of all ranks add up to {MAX_TOKENS:,} (2^62) or more "
                         f"at step {row[STEP]}, layer {row[LAYER]}: they would overflow",
                         path=label)


def _first_bad(summary: pl.DataFrame, condition: pl.Expr) -> dict | None:
    bad = summary.filter(condition).sort(STEP, LAYER)
    return bad.row(0, named=True) if bad.height else None


def _where(row: dict) -> str:
    rank = f", rank {row[RANK]}" if RANK in row else ""
    return f"step {row[STEP]}, layer {row[LAYER]}{rank}"


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
        if not 1 <= metadata.n_experts <= MAX_EXPERTS:
            raise TraceError(f"the metadata says {metadata.n_experts} experts per layer; "
                             f"moetrace reads 1..{MAX_EXPERTS:,}", path=label)
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

