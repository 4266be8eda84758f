"""The lazy trace reader: one file, a glob, a directory of parts or hive rank partitions.

``read_trace`` validates the whole trace in one pass over its row groups, read with pyarrow
so that the page checksums moetrace writes are verified (no rows are kept in memory), and
returns a :class:`Trace`: the lazy long frame, its dimensions, metadata and a small
per-(step, layer) summary. Dense arrays come from :meth:`Trace.loads`, a step range at a time.
A trace is read exactly as written or refused: every problem is a :class:`TraceError` naming
the file, and so is any error the Parquet libraries raise while reading it.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from moetrace.errors import TraceError, first_line
from moetrace.paths import expand, is_pattern
from moetrace.trace.schema import (
    EXPERT,
    INTEGRITY_KEY,
    LAYER,
    MAX_EXPERTS,
    MAX_LAYERS,
    MAX_RANK,
    MAX_STEP,
    MAX_TOKENS,
    METADATA_KEY,
    RANK,
    STEP,
    TOKENS,
    Integrity,
    TraceMetadata,
)
from moetrace.trace.shares import Loads, sampling_interval

_HIVE_RANK = re.compile(r"^rank=(\d+)$")
_WIDE_EXPERT = re.compile(r"^(?:expert_?|e)?(\d+)$")
_STEP_CHUNK_ROWS = 8_000_000  # rows gathered per pass when filling dense arrays
_BATCH_ROWS = 4_000_000  # rows per record batch of the validation pass
_FOLD_ROWS = 4_000_000  # key-summary rows pending (and at least the folded table's) before a fold


@dataclass(frozen=True)
class Trace:
    """A validated trace: lazy rows plus what is known about them without loading them."""

    path: str
    lazy: pl.LazyFrame  # canonical long rows: step, layer, expert, tokens[, rank] (not summed)
    metadata: TraceMetadata
    n_layers: int
    n_experts: int
    has_rank: bool
    step_totals: pl.DataFrame  # one row per (step, layer): tokens routed in total, sorted
    files: tuple[Path, ...] = ()
    #: whether every file carries page checksums (written by moetrace): corruption of its
    #: data is then detected on read; a foreign file's corruption cannot be.
    checksummed: bool = False

    @cached_property
    def steps(self) -> np.ndarray:
        """Sorted unique step numbers present in the trace."""
        return self.step_totals.get_column(STEP).unique(maintain_order=True).to_numpy()

    @property
    def n_steps(self) -> int:
        return len(self.steps)

    @cached_property
    def interval(self) -> int:
        """The sampling interval in training steps (1: every step recorded)."""
        return sampling_interval(self.steps)

    @cached_property
    def gaps(self) -> list[tuple[int, int]]:
        """Missing samples as (first missing step, last missing step), inclusive: where two
        recorded steps are further apart than the sampling interval."""
        steps, every = self.steps, self.interval
        jumps = np.nonzero(np.diff(steps) > every)[0]
        return [(int(steps[i] + every), int(steps[i + 1] - every)) for i in jumps]

    def handle(self) -> "TraceHandle":
        """What another process needs to open this trace again without validating it again
        (picklable: paths, dimensions, metadata and the validated totals)."""
        return TraceHandle(self.path, self.files, self.metadata, self.n_layers,
                           self.n_experts, self.has_rank, self.step_totals, self.checksummed)

    @cached_property
    def counts_dtype(self) -> np.dtype:
        """The narrowest integer type that holds every count: int32 when every (step, layer)
        total fits it (a count is at most its step's total), else int64."""
        largest = int(self.step_totals.get_column(TOKENS).max() or 0)
        return np.dtype(np.int32) if largest < 2**31 else np.dtype(np.int64)

    @cached_property
    def _totals(self) -> np.ndarray:
        """(L, T) tokens per layer and step, from the validation pass."""
        t = np.searchsorted(self.steps, self.step_totals.get_column(STEP).to_numpy())
        out = np.zeros((self.n_layers, self.n_steps), dtype=np.int64)
        out[self.step_totals.get_column(LAYER).to_numpy(), t] = \
            self.step_totals.get_column(TOKENS).to_numpy()
        return out

    def loads(self, layers: list[int] | None = None, start: int | None = None,
              stop: int | None = None) -> Loads:
        """Dense token counts for ``layers`` over steps ``start <= step <= stop`` (inclusive).

        Counts of several ranks add up in integers (exact; validation bounds every step's
        total). What is gathered is checked against the validation pass's totals, so a file
        that changed since :func:`read_trace` opened it is refused rather than misread.
        """
        layer_ids = tuple(range(self.n_layers)) if layers is None else tuple(int(x) for x in layers)
        bad = [x for x in layer_ids if not 0 <= x < self.n_layers]
        if bad:
            raise TraceError(f"no layer {bad[0]}: the trace has layers 0..{self.n_layers - 1}",
                             path=self.path)
        steps = self.steps
        lo = 0 if start is None else int(np.searchsorted(steps, start, side="left"))
        hi = len(steps) if stop is None else int(np.searchsorted(steps, stop, side="right"))
        steps = steps[lo:hi]
        counts = np.zeros((len(layer_ids), len(steps), self.n_experts), dtype=self.counts_dtype)
        if len(steps) == 0:
            return Loads(steps, counts, layer_ids)
        layer_pos = np.full(self.n_layers, -1, dtype=np.int64)
        layer_pos[list(layer_ids)] = np.arange(len(layer_ids))
        rows_per_step = max(1, len(self.step_totals) // max(1, self.n_steps)) * self.n_experts
        chunk = max(1, _STEP_CHUNK_ROWS // rows_per_step)
        with reading(self.path):
            for i in range(0, len(steps), chunk):
                part = steps[i:i + chunk]
                frame = (
                    self.lazy.filter(pl.col(STEP).is_between(int(part[0]), int(part[-1])))
                    .filter(pl.col(LAYER).is_in(list(layer_ids)))
                    .select(STEP, LAYER, EXPERT, TOKENS)
                    .collect()
                )
                t = np.searchsorted(part, frame.get_column(STEP).to_numpy())
                flat = (layer_pos[frame.get_column(LAYER).to_numpy()] * len(part) + t)
                flat = flat * self.n_experts + frame.get_column(EXPERT).to_numpy()
                block = np.zeros(len(layer_ids) * len(part) * self.n_experts, dtype=np.int64)
                tokens = frame.get_column(TOKENS).to_numpy()
                if self.has_rank:  # partial counts of several ranks add up, in integers
                    np.add.at(block, flat, tokens)
                else:
                    block[flat] = tokens
                counts[:, i:i + chunk] = block.reshape(len(layer_ids), len(part), self.n_experts)
        if not np.array_equal(counts.sum(axis=2), self._totals[list(layer_ids), lo:hi]):
            raise TraceError("its rows changed since it was opened, or it is corrupt: the "
                             "counts read do not add up to the validated totals", path=self.path)
        return Loads(steps, counts, layer_ids)


@dataclass(frozen=True)
class TraceHandle:
    """A validated trace as plain data (see :meth:`Trace.handle`): a worker process or a Ray
    task opens it with :meth:`open` without a second validation pass. What it reads is still
    checked against the validated totals (``Trace.loads``), so a file changed in between is
    refused."""

    path: str
    files: tuple[Path, ...]
    metadata: TraceMetadata
    n_layers: int
    n_experts: int
    has_rank: bool
    step_totals: pl.DataFrame
    checksummed: bool

    def open(self) -> Trace:
        plans = [_Plan.of(file) for file in self.files]
        return Trace(self.path, _scan(plans, self.has_rank, self.path), self.metadata,
                     self.n_layers, self.n_experts, self.has_rank, self.step_totals,
                     self.files, self.checksummed)


@contextmanager
def reading(label: str | Path) -> Iterator[None]:
    """Any error of the Parquet libraries while reading is bad input about ``label``."""
    try:
        yield
    except TraceError:
        raise
    except (pl.exceptions.PolarsError, pa.ArrowException, OSError, ValueError,
            OverflowError, MemoryError) as exc:
        raise TraceError(f"cannot be read (truncated or corrupt?): {first_line(exc)}",
                         path=label) from None
    except pl.exceptions.PanicException as exc:  # a BaseException, not an Exception
        raise TraceError(f"cannot be read (the Parquet reader failed on it): "
                         f"{first_line(exc)}", path=label) from None


def read_trace(path: str | Path) -> Trace:
    """Open and validate a trace; raise :class:`TraceError` naming the file and the problem."""
    label = str(path)
    files = resolve_files(label)
    metadata, checksummed = TraceMetadata(), True
    plans = []
    for file in files:
        found, integrity = _check_parquet_file(file)
        checksummed = checksummed and integrity is not None and integrity.page_checksums
        if found is not None and metadata == TraceMetadata():
            metadata = found
        plans.append(_Plan.of(file))
    has_rank = any(p.rank is not None for p in plans)
    summary = _summarize(plans, has_rank, label)
    n_layers, n_experts = _dimensions(summary, metadata, label)
    step_totals = (
        summary.group_by(STEP, LAYER).agg(pl.col(TOKENS).sum()).sort(STEP, LAYER)
    )
    _check_totals(step_totals, n_layers, label)
    lazy = _scan(plans, has_rank, label)
    return Trace(label, lazy, metadata, n_layers, n_experts, has_rank, step_totals,
                 tuple(files), checksummed)


def resolve_files(label: str) -> list[Path]:
    """The Parquet files behind a path: itself, a directory's parts, or a glob's matches.

    A path that exists is taken literally (``run[1].parquet`` is that file); only a path that
    does not exist may be a pattern (docs/trace-format.md).
    """
    path = Path(label)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.parquet") if not _hidden(p, path))
        if not files:
            raise TraceError("directory holds no .parquet files", path=label)
        return files
    if path.is_file():
        return [path]
    if is_pattern(label):
        files = [p for p in expand(label) if p.is_file()]
        if not files:
            raise TraceError("no files match this pattern", path=label)
        return files
    raise TraceError("no such file or directory", path=label)


def _hidden(file: Path, root: Path) -> bool:
    """Temporary and hidden files (``.name.tmp`` from atomic writes) are never part of a trace."""
    return any(part.startswith(".") for part in file.relative_to(root).parts)


def _check_parquet_file(file: Path) -> tuple[TraceMetadata | None, Integrity | None]:
    """Fail early on empty, non-Parquet or truncated files; the stored metadata and integrity
    record, if any (a moetrace file's metadata must match the checksum stored with it)."""
    if file.stat().st_size == 0:
        raise TraceError("empty file (0 bytes), not a Parquet trace", path=file)
    try:
        meta = pq.read_metadata(file)
    except Exception as exc:  # pyarrow raises several types for foreign or cut-off files
        if _looks_like_csv(file):
            raise TraceError("not Parquet but CSV text; import it with: moetrace record "
                             f"--from csv {shlex.quote(str(file))} -o TRACE.parquet",
                             path=file) from None
        raise TraceError(f"not a readable Parquet file (not Parquet, truncated or corrupt): "
                         f"{first_line(exc)}", path=file) from None
    stored = meta.metadata or {}
    raw = stored.get(METADATA_KEY.encode())
    integrity = None
    if INTEGRITY_KEY.encode() in stored:
        try:
            integrity = Integrity.from_json(stored[INTEGRITY_KEY.encode()])
        except (ValueError, TypeError, KeyError) as exc:
            raise TraceError(f"unreadable '{INTEGRITY_KEY}' record (corrupt?): "
                             f"{first_line(exc)}", path=file) from None
        if not integrity.matches(raw):
            raise TraceError(f"its '{METADATA_KEY}' metadata does not match the checksum "
                             "stored with it: the file is corrupt", path=file)
    if raw is None:
        return None, integrity
    try:
        return TraceMetadata.from_json(raw), integrity
    except (ValueError, TypeError) as exc:
        raise TraceError(f"unreadable '{METADATA_KEY}' metadata: {first_line(exc)}",
                         path=file) from None


_SNIFF_BYTES = 4096


def _looks_like_csv(file: Path) -> bool:
    """Whether a file that is not Parquet starts as a delimited text table does: UTF-8 text,
    printable, whose first line holds a comma, tab or semicolon (only its first bytes are
    read)."""
    with open(file, "rb") as handle:
        head = handle.read(_SNIFF_BYTES)
    if len(head) == _SNIFF_BYTES:  # whole lines only: a character may be cut at the end
        head = head[:head.rfind(b"\n") + 1] or head
    try:
        text = head.decode("utf-8-sig")
    except UnicodeDecodeError:
        return False
    printable = all(c.isprintable() or c in "\t\r\n" for c in text)
    return printable and any(sep in text.split("\n", 1)[0] for sep in ",\t;")


@dataclass(frozen=True)
class _Plan:
    """How one file's rows become canonical long rows: its layout, checked once from its
    schema, and the rank its directory gives (``rank=R/``)."""

    file: Path
    schema: pl.Schema
    wide: tuple[str, ...]  # expert columns of a wide file; empty for the long layout
    rank: int | None  # from the data's own column (-1) or from a rank=R directory
    float_tokens: bool

    @classmethod
    def of(cls, file: Path) -> "_Plan":
        with reading(file):
            schema = pl.scan_parquet(file, glob=False).collect_schema()
        names = schema.names()
        for col in (STEP, LAYER):
            if col not in names:
                raise TraceError(f"missing required column '{col}' (columns: "
                                 f"{', '.join(names)})", path=file)
        wide: list[str] = []
        if EXPERT not in names or TOKENS not in names:
            wide = [n for n in names if n not in (STEP, LAYER, RANK) and _WIDE_EXPERT.match(n)]
            if EXPERT in names or TOKENS in names or not wide:
                missing = EXPERT if EXPERT not in names else TOKENS
                raise TraceError(f"missing required column '{missing}' "
                                 f"(columns: {', '.join(names)})", path=file)
            for n in wide:
                _check_count_type(n, schema[n], file)
            bad = [n for n in wide if int(_WIDE_EXPERT.match(n).group(1)) >= MAX_EXPERTS]
            if bad:
                raise TraceError(f"expert column '{bad[0]}' is past the largest expert id "
                                 f"{MAX_EXPERTS - 1}", path=file)
            float_tokens = any(schema[n].is_float() for n in wide)
        else:
            float_tokens = schema[TOKENS].is_float()
        for col in (STEP, LAYER) + ((EXPERT,) if not wide else ()) + \
                ((RANK,) if RANK in names else ()):
            if not schema[col].is_integer():
                raise TraceError(f"column '{col}' must hold integers, found {schema[col]}",
                                 path=file)
        if not wide:
            _check_count_type(TOKENS, schema[TOKENS], file)
        rank = -1 if RANK in names else None
        hive = [m for part in file.parts if (m := _HIVE_RANK.match(part))]
        if rank is None and hive:
            rank = int(hive[-1].group(1))
            if rank > MAX_RANK:
                raise TraceError(f"rank directory 'rank={rank}' is past the largest rank "
                                 f"{MAX_RANK}", path=file)
        return cls(file, schema, tuple(wide), rank, float_tokens)

    def long(self, frame: pl.LazyFrame, has_rank: bool, index_type=pl.Int64,
             tokens_type=None) -> pl.LazyFrame:
        """This file's rows as step, layer, expert, tokens[, rank]: layer, expert and rank
        as ``index_type``, tokens as ``tokens_type`` (None: as stored)."""
        if self.wide:
            index = [c for c in (STEP, LAYER, RANK) if c in self.schema.names()]
            if self.float_tokens:
                frame = frame.with_columns(pl.col(list(self.wide)).cast(pl.Float64))
            else:
                supertype = pl.UInt64 if any(self.schema[n] == pl.UInt64 for n in self.wide) \
                    else pl.Int64
                frame = frame.with_columns(pl.col(list(self.wide)).cast(supertype))
            frame = frame.unpivot(on=list(self.wide), index=index, variable_name=EXPERT,
                                  value_name=TOKENS)
            frame = frame.with_columns(pl.col(EXPERT).str.extract(r"(\d+)$").cast(pl.Int64))
        cols = [pl.col(STEP).cast(pl.Int64), pl.col(LAYER).cast(index_type),
                pl.col(EXPERT).cast(index_type),
                pl.col(TOKENS) if tokens_type is None else pl.col(TOKENS).cast(tokens_type)]
        if has_rank:
            cols.append(pl.col(RANK).cast(index_type) if self.rank == -1
                        else pl.lit(self.rank or 0, dtype=index_type).alias(RANK))
        return frame.select(cols)


def _check_count_type(name: str, dtype: pl.DataType, file: Path) -> None:
    if not (dtype.is_integer() or dtype.is_float()):
        raise TraceError(f"column '{name}' must hold token counts (integers), found {dtype}",
                         path=file)


def _scan(plans: list[_Plan], has_rank: bool, label: str) -> pl.LazyFrame:
    """One lazy long frame over all files (validated, so the narrowing casts are safe)."""
    frames = [plan.long(pl.scan_parquet(plan.file, glob=False), has_rank, pl.Int32, pl.Int64)
              for plan in plans]
    with reading(label):
        return pl.concat(frames, how="vertical")


def _batches(plan: _Plan, row_groups: list[int] | None = None) -> Iterator[pl.DataFrame]:
    """The file's rows in batches of whole row groups (consecutive ones packed up to
    ``_BATCH_ROWS`` rows; a larger one alone, in batches of that size), pages verified
    against their checksums; ``row_groups``: only those."""
    with reading(plan.file):
        parquet = pq.ParquetFile(plan.file, page_checksum_verification=True)
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


def _summarize(plans: list[_Plan], has_rank: bool, label: str) -> pl.DataFrame:
    """One pass over every file's batches: column checks (nulls, ranges, token values) per
    batch, then per (step, layer[, rank]) row counts, distinct experts and token sums; rows
    are never kept. Memory: the summary (one row per key), folded as it grows."""
    keys = [STEP, LAYER] + ([RANK] if has_rank else [])
    parts, pending = [], 0  # pending: summary rows added since the last fold
    largest = 0.0  # the largest token count seen: bounds every sum (see _check_sums)
    for plan in plans:
        for frame in _batches(plan):
            if frame.height == 0:  # a row group of no rows has no values (nor min or max)
                continue
            with reading(plan.file):
                if plan.wide:  # unpivoted first; then the checks see one row per expert
                    frame = plan.long(frame.lazy(), has_rank).collect()
                    rows = frame.lazy().with_columns(
                        pl.col([c for c in (LAYER, EXPERT, RANK) if c in frame.columns])
                        .cast(pl.Int32), pl.col(TOKENS).cast(pl.Int64))
                else:
                    rows = plan.long(frame.lazy(), has_rank, pl.Int32, pl.Int64)
                largest = max(largest, _check_columns(frame, plan, keys, label))
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
        row = _check_split_keys(plans, has_rank, keys, summary.filter(pl.col("pieces") > 1),
                                label)
    if row is not None:
        raise TraceError(f"duplicate rows for the same ({', '.join(keys + [EXPERT])}) at "
                         f"{_where(row)}", path=label)
    # every (step, layer) sum is at most its rows (all ranks) times the largest count
    bound = summary.group_by(STEP, LAYER).agg(pl.col("rows").sum()).get_column("rows").max()
    if bound * largest >= MAX_TOKENS:
        _check_sums(plans, has_rank, keys, label)
    return summary.drop("pieces")


def _check_split_keys(plans: list[_Plan], has_rank: bool, keys: list[str],
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
    for plan in plans:
        for frame in _batches(plan, _groups_holding(plan, points)):
            with reading(plan.file):
                rows = plan.long(frame.lazy(), has_rank, pl.Int32, pl.Int64)
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


def _groups_holding(plan: _Plan, points: dict[str, np.ndarray]) -> list[int]:
    """Row groups of ``plan``'s file whose step and layer statistics admit one of the
    (step, layer) ``points`` (every row group where a statistic is missing, or when the
    points are too many to match one by one)."""
    with reading(plan.file):
        meta = pq.ParquetFile(plan.file).metadata
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


def _check_columns(frame: pl.DataFrame, plan: _Plan, keys: list[str], label: str) -> float:
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


def _check_sums(plans: list[_Plan], has_rank: bool, keys: list[str], label: str) -> None:
    """Exact check that no step's total reaches the limit (only when the cheap bound of
    :func:`_summarize` could not rule it out: counts near 2^62)."""
    parts = []
    for plan in plans:
        for frame in _batches(plan):
            with reading(plan.file):
                parts.append(plan.long(frame.lazy(), has_rank).group_by(keys).agg(
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
