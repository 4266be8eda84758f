"""The validation pass in ranges of row groups, run at once on a real process pool: the same
totals, dimensions and rows as one pass, and the same guarantees (duplicates between ranges,
token values, sums near the limit, page checksums), the first problem in range order being the
one reported whichever range finishes first."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
from conftest import long_frame, run_cli

from moetrace import TraceError, read_trace
from moetrace.scale import Local
from moetrace.trace.layout import FileLayout
from moetrace.trace.validate import row_ranges

POOL = Local(2)


def _groups(frame: pl.DataFrame, path, rows_per_group: int, **options) -> None:
    """``frame`` written as a plain Parquet file (no moetrace metadata) in row groups of
    ``rows_per_group`` rows."""
    pq.write_table(frame.to_arrow(), path, row_group_size=rows_per_group, **options)


@pytest.fixture
def counts() -> np.ndarray:
    return np.random.default_rng(3).integers(1, 100, size=(3, 40, 8))


def test_ranges_are_whole_row_groups_covering_every_file_once(tmp_path, counts):
    frame = long_frame(counts)  # 960 rows: 10 row groups of 96
    _groups(frame, tmp_path / "a.parquet", 96)
    _groups(frame.head(200), tmp_path / "b.parquet", 96)  # 3 row groups: 96, 96, 8
    layouts = [FileLayout.of(tmp_path / "a.parquet"), FileLayout.of(tmp_path / "b.parquet")]
    ranges = row_ranges(layouts, 250)
    assert [(r.layout.file.name, r.groups, r.rows) for r in ranges] == [
        ("a.parquet", (0, 1, 2), 288), ("a.parquet", (3, 4, 5), 288),
        ("a.parquet", (6, 7, 8), 288), ("a.parquet", (9,), 96), ("b.parquet", None, 200)]
    assert [r.groups for r in row_ranges(layouts[:1])] == [None]  # unsized: one range a file


def test_ranges_on_a_pool_give_what_one_pass_gives(tmp_path, counts):
    _groups(long_frame(counts), tmp_path / "t.parquet", 96)
    one = read_trace(tmp_path / "t.parquet")
    many = read_trace(tmp_path / "t.parquet", executor=POOL, range_rows=100)
    assert many.step_totals.equals(one.step_totals)
    assert (many.n_layers, many.n_experts, many.n_rows) == (3, 8, 960) == \
        (one.n_layers, one.n_experts, one.n_rows)
    np.testing.assert_array_equal(many.loads().counts, counts)


def test_a_duplicate_in_another_range_is_found(tmp_path, counts):
    frame = long_frame(counts).sort("step", "layer", "expert")
    twin = frame.filter((pl.col("step") == 2) & (pl.col("layer") == 1) & (pl.col("expert") == 3))
    _groups(pl.concat([frame, twin]), tmp_path / "d.parquet", 96)  # the twin: the last group
    assert len(row_ranges([FileLayout.of(tmp_path / "d.parquet")], 96)) == 11
    with pytest.raises(TraceError, match="duplicate rows .* at step 2, layer 1"):
        read_trace(tmp_path / "d.parquet", executor=POOL, range_rows=96)


def test_the_first_problem_in_range_order_is_reported(tmp_path, counts):
    """Two bad ranges: the earlier one's problem is the one named, as one pass names it,
    though both run at once (the later one is the smaller, often done first)."""
    frame = long_frame(counts).sort("step", "layer", "expert").with_columns(
        pl.col("tokens").cast(pl.Int64))
    tokens = frame.get_column("tokens").to_numpy().copy()
    tokens[300] = -1  # step 12: the fourth range of 96-row groups
    tokens[950] = -5  # step 39: the last
    _groups(frame.with_columns(pl.Series("tokens", tokens)), tmp_path / "bad.parquet", 96)
    with pytest.raises(TraceError, match="negative token counts at step 12, layer 1"):
        read_trace(tmp_path / "bad.parquet", executor=POOL, range_rows=96)
    with pytest.raises(TraceError, match="negative token counts at step 12, layer 1"):
        read_trace(tmp_path / "bad.parquet", range_rows=96)  # here, one range at a time


def test_sums_near_the_limit_are_checked_across_ranges(tmp_path):
    """Each range alone holds counts that fit; the step's total over the ranks of two ranges
    reaches 2^62."""
    half = 2**61
    frame = pl.DataFrame({"step": [0, 0, 1, 1], "layer": [0, 0, 0, 0], "expert": [0, 1, 0, 1],
                          "tokens": [half, 1, 1, 1], "rank": [0, 0, 0, 0]})
    other = frame.with_columns(pl.lit(1, dtype=pl.Int64).alias("rank"))
    _groups(pl.concat([frame, other]), tmp_path / "big.parquet", 4)
    with pytest.raises(TraceError, match=r"all ranks add up to .* at step 0, layer 0"):
        read_trace(tmp_path / "big.parquet", executor=POOL, range_rows=4)


def test_a_corrupt_page_in_a_later_range_is_refused(tmp_path, counts):
    path = tmp_path / "c.parquet"
    _groups(long_frame(counts), path, 96, write_page_checksum=True, compression="none")
    column = pq.ParquetFile(path).metadata.row_group(8).column(3)  # tokens of group 8
    data = bytearray(path.read_bytes())
    data[column.data_page_offset + column.total_compressed_size - 3] ^= 0x10
    path.write_bytes(bytes(data))
    with pytest.raises(TraceError, match="c.parquet"):
        read_trace(path, executor=POOL, range_rows=100)


def test_info_validates_on_workers_through_the_entry_point(tmp_path, counts, monkeypatch):
    _groups(long_frame(counts), tmp_path / "t.parquet", 96)
    serial = run_cli("info", str(tmp_path / "t.parquet"), "--json", "--workers", "1")
    monkeypatch.setenv("MOETRACE_CHUNK_MEMORY", "3k")  # 96 rows a range: 10 ranges
    pooled = run_cli("info", str(tmp_path / "t.parquet"), "--json", "--workers", "2")
    assert serial.returncode == pooled.returncode == 0, pooled.stderr
    assert json.loads(pooled.stdout) == json.loads(serial.stdout)
