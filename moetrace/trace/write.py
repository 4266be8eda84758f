"""Writing canonical traces: whole files or row-group streams, always atomically."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from moetrace.atomic import atomic_file
from moetrace.trace.schema import METADATA_KEY, RANK, SCHEMA, SCHEMA_WITH_RANK, TraceMetadata


def _arrow_schema(metadata: TraceMetadata, with_rank: bool) -> pa.Schema:
    frame = pl.DataFrame(schema=SCHEMA_WITH_RANK if with_rank else SCHEMA)
    return frame.to_arrow().schema.with_metadata({METADATA_KEY: metadata.to_json()})


def _conform(frame: pl.DataFrame, with_rank: bool) -> pa.Table:
    schema = SCHEMA_WITH_RANK if with_rank else SCHEMA
    return frame.select([pl.col(c).cast(t) for c, t in schema.items()]).to_arrow()


class TraceWriter:
    """Streams chunks of long-format rows into one Parquet trace, renamed into place on close.

    Use as a context manager; if the block raises, nothing appears at ``path``.
    """

    def __init__(self, path: str | Path, metadata: TraceMetadata, *, with_rank: bool = False,
                 compression: str = "zstd"):
        self.path = Path(path)
        self._with_rank = with_rank
        self._schema = _arrow_schema(metadata, with_rank)
        self._atomic = atomic_file(self.path)
        tmp = self._atomic.__enter__()
        self._writer = pq.ParquetWriter(tmp, self._schema, compression=compression)

    def write(self, frame: pl.DataFrame) -> None:
        table = _conform(frame, self._with_rank).replace_schema_metadata(self._schema.metadata)
        self._writer.write_table(table)

    def close(self) -> None:
        self._writer.close()
        self._atomic.__exit__(None, None, None)

    def abort(self, exc: BaseException | None = None) -> None:
        self._writer.close()
        self._atomic.__exit__(type(exc) if exc else RuntimeError, exc, None)

    def __enter__(self) -> "TraceWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort(exc)


def write_trace(frame: pl.DataFrame, path: str | Path, metadata: TraceMetadata) -> Path:
    """Write a long-format frame (with or without ``rank``) as one canonical trace file."""
    with TraceWriter(path, metadata, with_rank=RANK in frame.columns) as writer:
        writer.write(frame)
    return Path(path)
