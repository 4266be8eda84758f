"""Which files a trace path means, and what an error while reading one of them says.

A path that exists is taken literally (``run[1].parquet`` is that file); a directory means
every ``*.parquet`` below it (hidden names, temporaries of an atomic write, left out); only a
path that does not exist may be a glob. A ``rank=R`` directory gives its files' rank.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import polars as pl
import pyarrow as pa

from moetrace.errors import TraceError, first_line
from moetrace.paths import expand, is_pattern
from moetrace.trace.schema import MAX_RANK

_HIVE_RANK = re.compile(r"^rank=(\d+)$")


def resolve_files(label: str) -> list[Path]:
    """The Parquet files behind a path: itself, a directory's parts, or a glob's matches.

    A path that exists is taken literally (``run[1].parquet`` is that file); only a path that
    does not exist may be a pattern (docs/trace-format.md).
    """
    path = Path(label)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.parquet") if not _hidden(p, path))
        if not files:
            raise TraceError("directory holds no .parquet files", path=label)
        return files
    if path.is_file():
        return [path]
    if is_pattern(label):
        files = [p for p in expand(label) if p.is_file()]
        if not files:
            raise TraceError("no files match this pattern", path=label)
        return files
    raise TraceError("no such file or directory", path=label)


def _hidden(file: Path, root: Path) -> bool:
    """Temporary and hidden files (``.name.tmp`` from atomic writes) are never part of a trace."""
    return any(part.startswith(".") for part in file.relative_to(root).parts)


def hive_rank(file: Path) -> int | None:
    """The rank a ``rank=R`` directory above ``file`` gives it (the innermost), or None."""
    hive = [m for part in file.parts if (m := _HIVE_RANK.match(part))]
    if not hive:
        return None
    rank = int(hive[-1].group(1))
    if rank > MAX_RANK:
        raise TraceError(f"rank directory 'rank={rank}' is past the largest rank {MAX_RANK}",
                         path=file)
    return rank


@contextmanager
def reading(label: str | Path) -> Iterator[None]:
    """Any error of the Parquet libraries while reading is bad input about ``label``."""
    try:
        yield
    except TraceError:
        raise
    except (pl.exceptions.PolarsError, pa.ArrowException, OSError, ValueError,
            OverflowError, MemoryError) as exc:
        raise TraceError(f"cannot be read (truncated or corrupt?): {first_line(exc)}",
                         path=label) from None
    except pl.exceptions.PanicException as exc:  # a BaseException, not an Exception
        raise TraceError(f"cannot be read (the Parquet reader failed on it): "
                         f"{first_line(exc)}", path=label) from None

