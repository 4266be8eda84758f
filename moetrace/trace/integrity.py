"""Whether a file is an intact Parquet trace, before any row is read, and how moetrace seals
the files it writes so that any corruption of them is detected.

A file moetrace writes carries, in its Parquet key-value metadata, beside the ``moetrace``
metadata:

- ``moetrace.integrity``: ``{"metadata_crc32": N, "page_checksums": true}``, the CRC32 of the
  metadata JSON; every data page carries Parquet's own CRC32 (verified on read).
- ``moetrace.checksum``: ``{"file_crc32": "xxxxxxxx"}``, the CRC32 (8 hex digits) of the
  whole file as written with those 8 characters as ``........`` (the writer seals the file
  after Parquet has closed it, by writing the digits over the dots in place). It covers what
  the page checksums do not: page headers, the footer (schema, row-group and column-chunk
  metadata: offsets, sizes, statistics, encodings; every key-value entry), the footer's
  length and the magic bytes. Checking it reads the file once more, sequentially, at the
  speed of zlib's CRC32 (GB/s): cheap next to the validation pass, which decodes every page.

The reader also looks for these keys in the footer's raw bytes: a footer that holds them but
whose parse lost them (a flip in the Thrift structure can make the Parquet reader skip all the
key-value metadata) is corrupt. A level says what a file had: ``file`` (everything above),
``pages`` (a file written before the whole-file checksum: pages and metadata only) or
``none`` (another writer's file). See docs/trace-format.md.
"""

from __future__ import annotations

import json
import re
import shlex
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow.parquet as pq

from moetrace.errors import TraceError, first_line
from moetrace.trace.schema import CHECKSUM_KEY, INTEGRITY_KEY, METADATA_KEY, TraceMetadata

#: integrity levels, strongest first (a trace of several files has its weakest file's)
LEVELS = ("file", "pages", "none")

#: the whole-file checksum record as the Parquet writer writes it, and its sealed form
UNSEALED = '{"file_crc32": "........"}'
_SEALED = re.compile(rb'^\{"file_crc32": "([0-9a-f]{8})"\}$')
_CHUNK = 8 << 20  # bytes per read while computing a file's CRC32


@dataclass(frozen=True)
class Integrity:
    """The ``moetrace.integrity`` record: ``page_checksums`` (every data page carries a
    CRC32) and ``metadata_crc32`` (the CRC32 of the ``moetrace`` metadata JSON)."""

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


def file_metadata(metadata_json: str) -> dict[str, str]:
    """The key-value metadata a moetrace Parquet file is opened with: the metadata, its CRC
    record and the whole-file checksum record, unsealed (:func:`seal` fills it in)."""
    return {METADATA_KEY: metadata_json, INTEGRITY_KEY: Integrity.of(metadata_json).to_json(),
            CHECKSUM_KEY: UNSEALED}


def seal(path: Path) -> None:
    """Write the CRC32 of the closed Parquet file at ``path`` into its checksum record, in
    place (the file keeps its size; the CRC is of the file with the record unsealed)."""
    footer_start, footer = _footer(path)
    at = footer.find(UNSEALED.encode())
    if at < 0 or footer.find(UNSEALED.encode(), at + 1) >= 0:
        raise RuntimeError(f"{path}: the unsealed checksum record is not in the footer once")
    with open(path, "r+b") as handle:
        crc = _crc32(handle, 0, None)
        handle.seek(footer_start + at)
        handle.write(_sealed(crc))


def check_file(file: Path) -> tuple[TraceMetadata | None, str]:
    """Fail early on empty, non-Parquet, truncated or corrupt files; the stored metadata, if
    any, and the file's integrity level (see :data:`LEVELS`)."""
    size = file.stat().st_size
    if size == 0:
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
    footer_start, footer = _footer(file)
    for key in (CHECKSUM_KEY, INTEGRITY_KEY):
        if key.encode() in footer and key.encode() not in stored:
            raise TraceError(f"its footer holds a '{key}' record that the Parquet reader "
                             "does not find in it: the file is corrupt", path=file)
    level = "none"
    sealed = stored.get(CHECKSUM_KEY.encode())
    # unsealed: written by another program from a moetrace file's schema (pyarrow copies a
    # schema's metadata), which vouches for nothing, its pages' checksums included
    copy = sealed == UNSEALED.encode()
    if sealed is not None and not copy:
        _verify(file, sealed, footer_start, footer, size)
        level = "file"
    raw = stored.get(METADATA_KEY.encode())
    if INTEGRITY_KEY.encode() in stored:
        try:
            integrity = Integrity.from_json(stored[INTEGRITY_KEY.encode()])
        except (ValueError, TypeError, KeyError) as exc:
            raise TraceError(f"unreadable '{INTEGRITY_KEY}' record (corrupt?): "
                             f"{first_line(exc)}", path=file) from None
        if not integrity.matches(raw):
            raise TraceError(f"its '{METADATA_KEY}' metadata does not match the checksum "
                             "stored with it: the file is corrupt", path=file)
        if level == "none" and integrity.page_checksums and not copy:
            level = "pages"
    if raw is None:
        return None, level
    try:
        return TraceMetadata.from_json(raw), level
    except (ValueError, TypeError) as exc:
        raise TraceError(f"unreadable '{METADATA_KEY}' metadata: {first_line(exc)}",
                         path=file) from None


def _verify(file: Path, sealed: bytes, footer_start: int, footer: bytes, size: int) -> None:
    """The file's CRC32, with its sealed record read as unsealed, must be the one sealed."""
    match = _SEALED.match(sealed)
    at = footer.find(sealed)
    if match is None or at < 0 or footer.find(sealed, at + 1) >= 0:
        raise TraceError(f"unreadable '{CHECKSUM_KEY}' record: the file is corrupt", path=file)
    start = footer_start + at
    with open(file, "rb") as handle:
        crc = _crc32(handle, 0, start)
        crc = zlib.crc32(UNSEALED.encode(), crc)
        crc = _crc32(handle, start + len(sealed), size, crc)
    if _sealed(crc) != sealed:
        raise TraceError(f"its contents do not match the checksum stored with it "
                         f"(CRC32 {crc:08x}, stored {match.group(1).decode()}): the file is "
                         "corrupt", path=file)


def _sealed(crc: int) -> bytes:
    return UNSEALED.replace("." * 8, f"{crc:08x}").encode()


def _crc32(handle, start: int, stop: int | None, crc: int = 0) -> int:
    """CRC32 of bytes ``start``..``stop`` (None: the end) of an open file, read in chunks."""
    handle.seek(start)
    left = None if stop is None else stop - start
    while left is None or left > 0:
        chunk = handle.read(_CHUNK if left is None else min(_CHUNK, left))
        if not chunk:
            break
        crc = zlib.crc32(chunk, crc)
        if left is not None:
            left -= len(chunk)
    return crc


def _footer(file: Path) -> tuple[int, bytes]:
    """Where a Parquet file's footer starts, and its raw bytes (the file's last 8 bytes hold
    its length and the magic; the Parquet reader has checked them)."""
    with open(file, "rb") as handle:
        handle.seek(0, 2)
        size = handle.tell()
        handle.seek(size - 8)
        length = int.from_bytes(handle.read(4), "little")
        start = max(0, size - 8 - length)
        handle.seek(start)
        return start, handle.read(size - 8 - start)


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
