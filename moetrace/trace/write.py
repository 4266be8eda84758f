"""Writing canonical traces: whole files or row-group streams, atomically and checksummed.

Every file moetrace writes carries Parquet page checksums (CRC32 of every data page), an
integrity record with the CRC32 of its metadata (``moetrace.integrity``) and the CRC32 of the
whole file (``moetrace.checksum``, sealed once Parquet has closed the file), so the reader
detects a corrupted file instead of reading different numbers from it
(moetrace.trace.integrity).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from moetrace.output import write_file
from moetrace.trace.integrity import file_metadata, seal
from moetrace.trace.schema import (
    EXPERT,
    LAYER,
    RANK,
    SCHEMA,
    SCHEMA_WITH_RANK,
    STEP,
    TOKENS,
    TraceMetadata,
)


def _arrow_schema(metadata: TraceMetadata, with_rank: bool) -> pa.Schema:
    frame = pl.DataFrame(schema=SCHEMA_WITH_RANK if with_rank else SCHEMA)
    return frame.to_arrow().schema.with_metadata(file_metadata(metadata.to_json()))


def _conform(frame: pl.DataFrame, with_rank: bool) -> pa.Table:
    schema = SCHEMA_WITH_RANK if with_rank else SCHEMA
    return frame.select([pl.col(c).cast(t) for c, t in schema.items()]).to_arrow()


def parquet_writer(path: Path, schema: pa.Schema, compression: str = "zstd") -> pq.ParquetWriter:
    """A pyarrow writer with the options every moetrace Parquet file uses (page checksums)."""
    return pq.ParquetWriter(path, schema, compression=compression, write_page_checksum=True)


class TraceWriter:
    """Streams chunks of long-format rows into one Parquet trace, renamed into place on close.

    Use as a context manager; if the block raises, nothing appears at ``path``. ``force``
    and ``inputs`` are the output policy's (moetrace.output): an existing file is replaced
    only with ``force``, and never when it is one of ``inputs``.
    """

    def __init__(self, path: str | Path, metadata: TraceMetadata, *, with_rank: bool = False,
                 compression: str = "zstd", force: bool = False,
                 inputs: Iterable[str | Path] = ()):
        self.path = Path(path)
        self._with_rank = with_rank
        self._schema = _arrow_schema(metadata, with_rank)
        self._atomic = write_file(self.path, inputs=inputs, force=force)
        self._tmp = Path(self._atomic.__enter__())
        self._writer = parquet_writer(self._tmp, self._schema, compression)

    def write(self, frame: pl.DataFrame) -> None:
        table = _conform(frame, self._with_rank).replace_schema_metadata(self._schema.metadata)
        self._writer.write_table(table)

    def close(self) -> None:
        self._writer.close()
        try:
            seal(self._tmp)
        except BaseException as exc:
            self._atomic.__exit__(type(exc), exc, exc.__traceback__)
            raise
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


#: rows per row group of a converted file (a block of steps of one layer)
ROW_GROUP_ROWS = 1 << 20


def layer_rows(steps: np.ndarray, layer: int, counts: np.ndarray,
               rank: int | None = None) -> pl.DataFrame:
    """One layer's (T, E) counts as long rows, step-major within the layer (with a ``rank``
    column when ``rank`` is given)."""
    n_steps, n_experts = counts.shape
    columns = {
        STEP: np.repeat(steps.astype(np.int64), n_experts),
        LAYER: np.full(n_steps * n_experts, layer, dtype=np.int32),
        EXPERT: np.tile(np.arange(n_experts, dtype=np.int32), n_steps),
        TOKENS: counts.reshape(-1).astype(np.int64),
    }
    if rank is not None:
        columns[RANK] = np.full(n_steps * n_experts, rank, dtype=np.int32)
    return pl.DataFrame(columns)


def write_layer_groups(writer: "TraceWriter", steps: np.ndarray, layers, counts: np.ndarray,
                       rank: int | None = None, rows_per_group: int = ROW_GROUP_ROWS) -> None:
    """Write (L, T, E) ``counts`` as row groups that each hold one layer's block of steps, so
    that a reader's filter on layers skips the other layers' row groups by their statistics
    (the simulator, the recorder and ``convert`` all write this way)."""
    block = max(1, rows_per_group // max(1, counts.shape[2]))
    for i, layer in enumerate(layers):
        for start in range(0, len(steps), block):
            writer.write(layer_rows(steps[start:start + block], int(layer),
                                    counts[i, start:start + block], rank))


def write_trace(frame: pl.DataFrame, path: str | Path, metadata: TraceMetadata, *,
                force: bool = False, inputs: Iterable[str | Path] = ()) -> Path:
    """Write a long-format frame (with or without ``rank``) as one canonical trace file."""
    with TraceWriter(path, metadata, with_rank=RANK in frame.columns, force=force,
                     inputs=inputs) as writer:
        writer.write(frame)
    return Path(path)
