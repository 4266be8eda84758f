"""Integrity of the files moetrace writes: a whole-file CRC32 sealed into the footer, verified
on read, so that a corrupted byte anywhere (page headers, footer, its length, the magic) is
refused rather than read as different data; older moetrace files and other writers' files
still read, at the level of protection they have."""

from __future__ import annotations

import re
import zlib
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import long_frame, run_cli

from moetrace import TraceError, TraceMetadata, read_trace, write_trace
from moetrace.record.importers import import_trace
from moetrace.simulate import simulate_trace
from moetrace.trace.integrity import Integrity
from moetrace.trace.write import parquet_writer


def _written(tmp_path: Path, small_counts) -> Path:
    path = tmp_path / "t.parquet"
    write_trace(long_frame(small_counts), path, TraceMetadata(n_experts=4, top_k=2))
    return path


def _flipped(path: Path, byte: int, bit: int, out: Path) -> Path:
    data = bytearray(path.read_bytes())
    data[byte] ^= 1 << bit
    out.write_bytes(bytes(data))
    return out


def _footer_start(data: bytes) -> int:
    return len(data) - 8 - int.from_bytes(data[-8:-4], "little")


def test_the_checksum_is_the_crc32_of_the_whole_file_with_its_digits_unsealed(
        tmp_path, small_counts):
    """The definition docs/trace-format.md gives, computed independently."""
    path = _written(tmp_path, small_counts)
    data = path.read_bytes()
    sealed = pq.read_metadata(path).metadata[b"moetrace.checksum"]
    digits = re.fullmatch(rb'\{"file_crc32": "([0-9a-f]{8})"\}', sealed).group(1)
    assert data.count(sealed) == 1
    unsealed = data.replace(sealed, b'{"file_crc32": "........"}')
    assert zlib.crc32(unsealed) == int(digits, 16)
    trace = read_trace(path)
    assert trace.integrity == "file" and trace.checksummed


def test_every_writer_seals_its_files(tmp_path, small_counts):
    """The simulator, an importer and convert write through the one writer, so their files
    carry the whole-file checksum."""
    simulate_trace(tmp_path / "sim.parquet", preset="gpt3-125m", steps=50, layers=2, seed=0)
    src = tmp_path / "loads.csv"
    long_frame(small_counts).write_csv(src)
    import_trace("csv", src, tmp_path / "imported.parquet")
    assert run_cli("convert", str(tmp_path / "sim.parquet"), "-o",
                   str(tmp_path / "converted.parquet")).returncode == 0
    for name in ("sim", "imported", "converted"):
        assert read_trace(tmp_path / f"{name}.parquet").integrity == "file", name


def test_a_flip_that_makes_parquet_skip_the_key_value_metadata_is_refused(tmp_path):
    """A flipped bit in the footer's Thrift structure can make the Parquet reader skip every
    key-value entry and read on: the file would read as a foreign one, its metadata (top-k,
    experts) lost. Such a footer still holds the records' keys: it is refused."""
    path = tmp_path / "sim.parquet"
    simulate_trace(path, preset="gpt3-125m", steps=60, layers=2, experts=4, seed=0)
    data = path.read_bytes()
    footer_start = _footer_start(data)
    first_key = min(at for at in (data.find(key, footer_start) for key in
                                  (b"ARROW:schema", b"moetrace")) if at >= 0)
    dropped = 0
    for byte in range(first_key - 6, first_key):  # the list header and the first key's
        for bit in range(8):
            copy = _flipped(path, byte, bit, tmp_path / f"f{byte}-{bit}.parquet")
            try:
                kept = pq.read_metadata(copy).metadata
            except Exception:  # noqa: BLE001 - unreadable to pyarrow: refused anyway
                kept = {}
            if kept is None:  # the scenario: parsed, with no key-value metadata at all
                dropped += 1
            with pytest.raises(TraceError, match="corrupt"):
                read_trace(copy)
    assert dropped > 0  # the scenario happens (else this test would test nothing)


def test_every_flip_in_a_page_header_is_refused(tmp_path, small_counts):
    """Page headers (sizes, value counts, encodings, statistics) lie outside the pages'
    CRC32: a flip there is caught by the file's checksum."""
    path = _written(tmp_path, small_counts)
    meta = pq.read_metadata(path)
    starts = set()
    for g in range(meta.num_row_groups):
        for c in range(meta.num_columns):
            chunk = meta.row_group(g).column(c)
            starts |= {o for o in (chunk.dictionary_page_offset, chunk.data_page_offset)
                       if o is not None}
    for start in sorted(starts):
        for byte in range(start, start + 16):
            for bit in range(8):
                with pytest.raises(TraceError):
                    read_trace(_flipped(path, byte, bit, tmp_path / "f.parquet"))


def test_a_flipped_checksum_digit_and_a_flipped_footer_length_are_refused(
        tmp_path, small_counts):
    path = _written(tmp_path, small_counts)
    data = path.read_bytes()
    digit = data.find(b'"file_crc32": "') + len(b'"file_crc32": "')
    with pytest.raises(TraceError, match="corrupt"):
        read_trace(_flipped(path, digit, 0, tmp_path / "digit.parquet"))
    for byte in range(len(data) - 8, len(data)):
        with pytest.raises(TraceError):
            read_trace(_flipped(path, byte, 3, tmp_path / "tail.parquet"))


def test_a_file_written_before_the_whole_file_checksum_reads_at_the_older_level(
        tmp_path, small_counts):
    """As moetrace wrote traces before: page checksums and the metadata's CRC, no whole-file
    checksum. It reads the same, says so, and names the command that adds the checksum."""
    table = long_frame(small_counts).to_arrow()
    text = TraceMetadata(n_experts=4).to_json()
    table = table.replace_schema_metadata({"moetrace": text,
                                           "moetrace.integrity": Integrity.of(text).to_json()})
    path = tmp_path / "older.parquet"
    with parquet_writer(path, table.schema) as writer:
        writer.write_table(table)
    trace = read_trace(path)
    assert trace.integrity == "pages" and trace.checksummed
    np.testing.assert_array_equal(trace.loads().counts, small_counts)
    out = run_cli("info", str(path))
    assert out.returncode == 0 and "moetrace convert" in out.stdout, out.stdout


def test_a_copy_written_by_another_program_is_read_as_a_foreign_file(tmp_path, small_counts):
    """pyarrow copies a moetrace file's schema metadata, the unsealed checksum record with it:
    the copy reads (as the data it holds), with no claim to checksums it may not have."""
    path = _written(tmp_path, small_counts)
    copy = tmp_path / "copy.parquet"
    pq.write_table(pq.read_table(path), copy)
    trace = read_trace(copy)
    assert trace.integrity == "none" and not trace.checksummed
    np.testing.assert_array_equal(trace.loads().counts, small_counts)
    assert trace.metadata == read_trace(path).metadata


def test_info_states_the_integrity_level(tmp_path, small_counts):
    path = _written(tmp_path, small_counts)
    out = run_cli("info", str(path), "--json")
    assert out.returncode == 0 and '"integrity": "file"' in out.stdout
    assert "whole-file and page checksums verified" in run_cli("info", str(path)).stdout
