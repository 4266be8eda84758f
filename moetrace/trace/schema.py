"""The canonical trace format: column names, dtypes and the metadata stored with a trace.

A trace is a long table with one row per (step, layer, expert[, rank]) and the number of
tokens routed to that expert at that step. Metadata is JSON under the Parquet key-value key
``moetrace``. See docs/trace-format.md.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import polars as pl

METADATA_KEY = "moetrace"
#: Parquet keys of the integrity records moetrace writes beside the metadata
#: (moetrace.trace.integrity): the metadata's CRC and page checksums, and the whole file's CRC.
INTEGRITY_KEY = "moetrace.integrity"
CHECKSUM_KEY = "moetrace.checksum"
FORMAT_VERSION = 1

#: Limits of the reader (docs/trace-format.md): ids are dense 0..N-1 indices below these, and
#: token counts and every step's total stay below MAX_TOKENS, far inside int64, so sums over
#: experts and ranks are exact.
MAX_EXPERTS = 1 << 20
MAX_LAYERS = 1 << 16
MAX_RANK = (1 << 31) - 1
MAX_STEP = 1 << 62
MAX_TOKENS = 1 << 62

STEP, LAYER, EXPERT, TOKENS, RANK = "step", "layer", "expert", "tokens", "rank"
REQUIRED_COLUMNS = (STEP, LAYER, EXPERT, TOKENS)
KEY_COLUMNS = (STEP, LAYER, EXPERT)

#: dtypes of the canonical (long) layout as written by moetrace.
SCHEMA = {STEP: pl.Int64, LAYER: pl.Int32, EXPERT: pl.Int32, TOKENS: pl.Int64}
SCHEMA_WITH_RANK = {**SCHEMA, RANK: pl.Int32}

SOURCES = ("simulated", "recorded", "imported")


@dataclass
class TraceMetadata:
    """What a trace says about itself; every field is optional on read."""

    model: str | None = None
    n_layers: int | None = None
    n_experts: int | None = None
    top_k: int | None = None
    tokens_per_step: int | None = None
    source: str | None = None
    format_version: int = FORMAT_VERSION
    #: anything else the source knows, e.g. ``true_boundaries`` for simulated traces.
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> "TraceMetadata":
        """Parse stored metadata; unknown top-level keys are kept in ``extra``."""
        raw = json.loads(text)
        if not isinstance(raw, dict):
            raise ValueError("metadata is not a JSON object")
        known = {f for f in cls.__dataclass_fields__}
        extra = dict(raw.pop("extra", None) or {})
        extra.update({k: raw.pop(k) for k in list(raw) if k not in known})
        return cls(**raw, extra=extra)
