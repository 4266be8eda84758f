"""How one file's rows become canonical long rows: its layout (long or wide, a rank column or
a ``rank=R`` directory), checked once from its schema, and the lazy scan over all files."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from moetrace.errors import TraceError
from moetrace.trace.files import hive_rank, reading
from moetrace.trace.schema import EXPERT, LAYER, MAX_EXPERTS, RANK, STEP, TOKENS

_WIDE_EXPERT = re.compile(r"^(?:expert_?|e)?(\d+)$")


@dataclass(frozen=True)
class FileLayout:
    """How one file's rows become canonical long rows: its layout, checked once from its
    schema, and the rank its directory gives (``rank=R/``)."""

    file: Path
    schema: pl.Schema
    wide: tuple[str, ...]  # expert columns of a wide file; empty for the long layout
    rank: int | None  # from the data's own column (-1) or from a rank=R directory
    float_tokens: bool

    @classmethod
    def of(cls, file: Path) -> "FileLayout":
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
        rank = -1 if RANK in names else hive_rank(file)
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


def scan(layouts: list[FileLayout], has_rank: bool, label: str) -> pl.LazyFrame:
    """One lazy long frame over all files (validated, so the narrowing casts are safe)."""
    frames = [layout.long(pl.scan_parquet(layout.file, glob=False), has_rank, pl.Int32,
                          pl.Int64) for layout in layouts]
    with reading(label):
        return pl.concat(frames, how="vertical")

