"""The canonical trace format: column names, dtypes and the metadata stored with a trace.

A trace is a long table with one row per (step, layer, expert[, rank]) and the number of
tokens routed to that expert at that step. Metadata is JSON under the Parquet key-value key
``moetrace``. See docs/trace-format.md.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import asdict, dataclass, field
from typing import Any

import polars as pl

METADATA_KEY = "moetrace"
#: Parquet key of the integrity record moetrace writes beside the metadata (see Integrity).
INTEGRITY_KEY = "moetrace.integrity"
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


@dataclass(frozen=True)
class Integrity:
    """What a moetrace-written file says about its own integrity.

    ``page_checksums``: every data page carries a CRC32 (verified on read).
    ``metadata_crc32``: the CRC32 of the ``moetrace`` metadata JSON, whose footer has no
    checksum of its own, so a flipped bit there is detected too.
    """

    page_checksums: bool
    metadata_crc32: int

    @classmethod
    def of(cls, metadata_json: str) -> "Integrity":
        return cls(True, zlib.crc32(metadata_json.encode()))

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> "Integrity":
        raw = json.loads(text)
        if not isinstance(raw, dict) or set(raw) != {"page_checksums", "metadata_crc32"} \
                or not isinstance(raw["page_checksums"], bool) \
                or not isinstance(raw["metadata_crc32"], int):
            raise ValueError("not an integrity record")
        return cls(raw["page_checksums"], raw["metadata_crc32"])

    def matches(self, metadata_json: bytes | None) -> bool:
        return zlib.crc32(metadata_json or b"") == self.metadata_crc32
