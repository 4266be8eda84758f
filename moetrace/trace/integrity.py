"""Whether a file is an intact Parquet trace before any row is read: not empty, Parquet (a CSV
file is named as such, with the command that imports it), and, for a file moetrace wrote,
its metadata matching the checksum stored with it."""

from __future__ import annotations

import shlex
from pathlib import Path

import pyarrow.parquet as pq

from moetrace.errors import TraceError, first_line
from moetrace.trace.schema import INTEGRITY_KEY, METADATA_KEY, Integrity, TraceMetadata


def check_file(file: Path) -> tuple[TraceMetadata | None, Integrity | None]:
    """Fail early on empty, non-Parquet or truncated files; the stored metadata and integrity
    record, if any (a moetrace file's metadata must match the checksum stored with it)."""
    if file.stat().st_size == 0:
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
    raw = stored.get(METADATA_KEY.encode())
    integrity = None
    if INTEGRITY_KEY.encode() in stored:
        try:
            integrity = Integrity.from_json(stored[INTEGRITY_KEY.encode()])
        except (ValueError, TypeError, KeyError) as exc:
            raise TraceError(f"unreadable '{INTEGRITY_KEY}' record (corrupt?): "
                             f"{first_line(exc)}", path=file) from None
        if not integrity.matches(raw):
            raise TraceError(f"its '{METADATA_KEY}' metadata does not match the checksum "
                             "stored with it: the file is corrupt", path=file)
    if raw is None:
        return None, integrity
    try:
        return TraceMetadata.from_json(raw), integrity
    except (ValueError, TypeError) as exc:
        raise TraceError(f"unreadable '{METADATA_KEY}' metadata: {first_line(exc)}",
                         path=file) from None


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

