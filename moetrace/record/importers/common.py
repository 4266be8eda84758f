"""What every importer shares: the rows it hands over, their checks, and the atomic write.

A format module only turns its files into long rows ``(step, layer, expert, tokens)`` in the
source's own numbering; :func:`write_imported` adds up duplicates (ranks, micro-batches),
checks the result, renumbers the source's MoE layers to ``0..L-1`` (the originals are kept in
the metadata as ``source_layers``) and writes one canonical trace that ``read_trace`` accepts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from moetrace.output import check_output, write_file
from moetrace.errors import ParameterError, TraceError, first_line
from moetrace.trace.read import read_trace
from moetrace.trace.schema import EXPERT, LAYER, RANK, STEP, TOKENS, TraceMetadata
from moetrace.trace.write import write_trace


@dataclass(frozen=True)
class ImportOptions:
    """What the user states about a dump that its files do not say.

    ``layout`` holds the parallel layout of the run that wrote it (``ep``, ``etp``, ``pp``
    sizes), for formats whose files are per rank and per local expert; each format names the
    keys it reads in its ``LAYOUT`` and refuses others.
    """

    n_experts: int | None = None
    layout: Mapping[str, int] = field(default_factory=dict)

    def size(self, key: str, default: int = 1) -> int:
        return int(self.layout.get(key, default))


def collect_records(frames: list[pl.LazyFrame], file: Path, *, what: str, empty: str,
                    unit: str, required: tuple[str, ...]) -> list[pl.DataFrame]:
    """Collect a line-format importer's frames in one streaming pass; the first is its
    checks, with the record count in column ``records`` and, per ``required`` field, the
    records that lack it. Raises naming ``file``: not ``what`` at all (the reader failed),
    ``empty`` (no records), or "N unit(s) without 'field'"."""
    try:
        collected = pl.collect_all(frames, engine="streaming")
    except pl.exceptions.PolarsError as exc:
        raise TraceError(f"not {what}: {first_line(exc)}", path=file) from None
    checks = collected[0]
    if checks.item(0, "records") == 0:
        raise TraceError(empty, path=file)
    for col in required:
        if checks.item(0, col):
            raise TraceError(f"{checks.item(0, col)} {unit}(s) without '{col}'", path=file)
    return collected


def parse_layout(text: str | None) -> dict[str, int]:
    """``"ep=8,pp=2"`` -> ``{"ep": 8, "pp": 2}``; every size a positive integer."""
    layout: dict[str, int] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        key = key.strip().lower()
        try:
            size = int(value)
        except ValueError:
            size = 0
        if not sep or not key or size < 1:
            raise ParameterError(f"--layout takes KEY=SIZE pairs such as ep=8,pp=2; "
                                 f"'{item.strip()}' is not one")
        if key in layout:
            raise ParameterError(f"--layout gives '{key}' twice")
        layout[key] = size
    return layout


def check_layout(options: ImportOptions, fmt: str, known: Mapping[str, str]) -> None:
    """Refuse layout keys that format ``fmt`` does not read (``known``: key -> meaning)."""
    unknown = sorted(set(options.layout) - set(known))
    if unknown:
        accepted = ", ".join(f"{k} ({v})" for k, v in known.items()) or "none"
        raise ParameterError(f"--layout {', '.join(unknown)} means nothing to --from {fmt}; "
                             f"it reads: {accepted}")


@dataclass
class Imported:
    """Long rows read from a foreign dump, plus what the format says about the run."""

    rows: pl.LazyFrame  # step, layer, expert, tokens in the source's numbering; may repeat keys
    top_k: int | None = None
    n_experts: int | None = None  # when the format knows it (else the largest id + 1)
    model: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    tokens_per_step: int | None = None  # when the format knows it (else total / top_k)


def write_imported(imported: Imported, out: str | Path, src: str | Path, fmt: str, *,
                   n_experts: int | None = None, top_k: int | None = None,
                   tokens_per_step: int | None = None, steps_are: str | None = None,
                   force: bool = False) -> Path:
    """Check and renumber ``imported`` rows and write them atomically as a trace at ``out``.

    ``top_k`` and ``tokens_per_step`` state what the format cannot (or override it); both
    reach the trace's metadata, where the noise floor and the report read them. ``steps_are``
    overrides what the format says its steps are (an inference trace's decode steps, say).
    """
    out = Path(out)
    if out.is_dir():
        raise ParameterError(f"{out} is a directory; importing writes one trace file "
                             "(for example -o trace.parquet)")
    check_output(out, kind="file", inputs=[src], force=force)
    for name, value in (("--top-k", top_k), ("--tokens-per-step", tokens_per_step)):
        if value is not None and value < 1:
            raise ParameterError(f"{name} must be at least 1, got {value}")
    try:
        keys = [STEP, LAYER, EXPERT] + ([RANK] if RANK in imported.rows.collect_schema()
                                        else [])  # ranks kept as ranks; the reader sums them
        frame = (imported.rows.group_by(keys).agg(pl.col(TOKENS).sum())
                 .collect(engine="streaming"))
    except pl.exceptions.PolarsError as exc:
        raise TraceError(f"cannot read it as {fmt}: {first_line(exc)}", path=src) from None
    if frame.height == 0:
        raise TraceError(f"no routing counts found in this {fmt} dump", path=src)
    frame = _checked_counts(frame, src)
    n_experts = _experts(frame, imported.n_experts if n_experts is None else n_experts, src)
    source_layers = frame.get_column(LAYER).unique().sort().to_list()
    frame = frame.with_columns((pl.col(LAYER).rank("dense") - 1).cast(pl.Int32)).sort(keys)
    totals = _complete_totals(frame, source_layers, src)
    top_k = top_k or imported.top_k
    tokens_per_step = tokens_per_step or imported.tokens_per_step
    if tokens_per_step is None and top_k:
        tokens_per_step = int(totals.item(0, TOKENS)) // top_k
    metadata = TraceMetadata(
        model=imported.model, n_layers=len(source_layers), n_experts=n_experts,
        top_k=top_k, tokens_per_step=tokens_per_step, source="imported",
        extra={"source_format": fmt, "source_path": str(src), "source_layers": source_layers,
               **imported.extra, **({"steps_are": steps_are} if steps_are else {})})
    with write_file(out, inputs=[src], force=force) as tmp:
        write_trace(frame, tmp, metadata, force=True)
        read_trace(tmp)  # what we hand over must read back; nothing appears at out otherwise
    return out


def _checked_counts(frame: pl.DataFrame, src: str | Path) -> pl.DataFrame:
    """Nulls, negatives and fractional counts are errors naming the first place they occur."""
    for col in (STEP, LAYER, EXPERT, TOKENS):
        if frame.get_column(col).null_count():
            raise TraceError(f"missing values in '{col}'", path=src)
    for col in (STEP, LAYER, EXPERT):
        if not frame.schema[col].is_integer():
            raise TraceError(f"'{col}' must hold integers, found {frame.schema[col]}", path=src)
    tokens = pl.col(TOKENS)
    checks = [(pl.col(STEP) < 0, "negative step"), (pl.col(LAYER) < 0, "negative layer"),
              (pl.col(EXPERT) < 0, "negative expert id"), (tokens < 0, "negative token count")]
    if frame.schema[TOKENS].is_float():
        checks.append((tokens.is_nan() | (tokens != tokens.floor()), "fractional token count"))
    elif not frame.schema[TOKENS].is_integer():
        raise TraceError(f"token counts must be numbers, found {frame.schema[TOKENS]}", path=src)
    for condition, problem in checks:
        bad = frame.filter(condition).sort(STEP, LAYER, EXPERT)
        if bad.height:
            row = bad.row(0, named=True)
            raise TraceError(f"{problem} at step {row[STEP]}, layer {row[LAYER]}, expert "
                             f"{row[EXPERT]}", path=src)
    return frame.with_columns(pl.col(STEP).cast(pl.Int64), pl.col(EXPERT).cast(pl.Int32),
                              tokens.cast(pl.Int64),
                              *([pl.col(RANK).cast(pl.Int32)] if RANK in frame.columns else []))


def _experts(frame: pl.DataFrame, n_experts: int | None, src: str | Path) -> int:
    observed = int(frame.get_column(EXPERT).max()) + 1
    if n_experts is None:
        return observed
    if n_experts < 1:
        raise ParameterError(f"--experts must be positive, got {n_experts}")
    if observed > n_experts:
        raise TraceError(f"expert id {observed - 1} found but --experts says {n_experts} "
                         "experts per layer", path=src)
    return n_experts


def _complete_totals(frame: pl.DataFrame, source_layers: list[int],
                     src: str | Path) -> pl.DataFrame:
    """Per (step, layer) token totals; every step must route tokens through every layer."""
    totals = frame.group_by(STEP, LAYER).agg(pl.col(TOKENS).sum()).sort(STEP, LAYER)
    per_step = totals.filter(pl.col(TOKENS) > 0).group_by(STEP).agg(pl.col(LAYER)).sort(STEP)
    short = per_step.filter(pl.col(LAYER).list.len() < len(source_layers))
    all_steps = totals.get_column(STEP).unique()
    if short.height or per_step.height < all_steps.len():
        if short.height:
            step, present = short.item(0, STEP), set(short.item(0, LAYER).to_list())
        else:
            step = int(all_steps.filter(~all_steps.is_in(per_step.get_column(STEP))).min())
            present = set()
        missing = min(i for i in range(len(source_layers)) if i not in present)
        raise TraceError(f"step {step} has no tokens for layer {source_layers[missing]}; every "
                         "step needs counts for every MoE layer", path=src)
    return totals
