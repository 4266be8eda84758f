"""CSV / TSV counts, long or wide, with the delimiter taken from the extension or sniffed.

Long: ``step,layer,expert,tokens[,rank]`` (``count`` is accepted for ``tokens``); rows with
the same (step, layer, expert) add up, so per-rank rows are summed. Wide: ``step,layer`` and
one column per expert (``0``, ``e0``, ``expert_0`` or ``expert0``). Read lazily by polars.
"""

from __future__ import annotations

import csv as stdlib_csv
import re
from pathlib import Path

import polars as pl

from moetrace.errors import TraceError, first_line
from moetrace.record.importers.common import ImportOptions, Imported
from moetrace.trace.schema import EXPERT, LAYER, STEP, TOKENS

_WIDE_EXPERT = re.compile(r"^(?:expert_?|e)?(\d+)$")
_TOKEN_NAMES = (TOKENS, "count")
_SNIFF_BYTES = 64_000


def delimiter(src: Path) -> str:
    """Tab for .tsv/.tab files; otherwise sniffed from the start of the file (comma if unsure)."""
    if src.suffix.lower() in (".tsv", ".tab"):
        return "\t"
    with open(src, newline="", errors="replace") as handle:
        sample = handle.read(_SNIFF_BYTES)
    try:
        return stdlib_csv.Sniffer().sniff(sample, delimiters=",\t;|").delimiter
    except stdlib_csv.Error:
        return ","


def read_rows(src: Path, options: ImportOptions | None = None) -> Imported:
    """Long rows from a long or wide table; the layout is told by its header."""
    if src.is_dir():
        raise TraceError("is a directory; --from csv takes one .csv or .tsv file", path=src)
    lazy = pl.scan_csv(src, separator=delimiter(src), infer_schema_length=10_000)
    try:
        names = lazy.collect_schema().names()
    except pl.exceptions.PolarsError as exc:
        raise TraceError(f"not a readable CSV/TSV file: {first_line(exc)}", path=src) from None
    lazy = lazy.rename({n: n.strip().lower() for n in names})
    names = [n.strip().lower() for n in names]
    for col in (STEP, LAYER):
        if col not in names:
            raise TraceError(f"missing column '{col}' (columns: {', '.join(names)})", path=src)
    tokens = next((n for n in _TOKEN_NAMES if n in names), None)
    if EXPERT in names and tokens is not None:
        rows = lazy.select(STEP, LAYER, EXPERT, pl.col(tokens).alias(TOKENS))
        return Imported(rows, extra={"layout": "long"})
    wide = [n for n in names if _WIDE_EXPERT.match(n)]
    if not wide:
        raise TraceError("neither long (step, layer, expert, tokens) nor wide (step, layer and "
                         f"one column per expert) columns: {', '.join(names)}", path=src)
    schema = lazy.collect_schema()
    for name in wide:
        if not schema[name].is_numeric():
            raise TraceError(f"expert column '{name}' must hold token counts, found "
                             f"{schema[name]}", path=src)
    if any(schema[n].is_float() for n in wide):  # one dtype for the unpivoted column
        lazy = lazy.with_columns(pl.col(wide).cast(pl.Float64))
    rows = lazy.unpivot(on=wide, index=[STEP, LAYER], variable_name=EXPERT,
                        value_name=TOKENS).with_columns(
        pl.col(EXPERT).str.extract(r"(\d+)$").cast(pl.Int64))
    return Imported(rows, extra={"layout": "wide"})
