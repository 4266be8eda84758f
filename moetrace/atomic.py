"""Atomic writing: an output is complete or absent, never half-written.

Everything is written under a temporary name in the destination's own directory (so the
final rename stays on one filesystem and is atomic) and renamed into place only on success.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from moetrace.errors import OutputExistsError


def _default_mode(directory: bool) -> int:
    """The mode a plain open()/mkdir() would give under the current umask (mkstemp uses 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


def _temp_sibling(dest: Path, *, directory: bool) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{dest.name}."
    if directory:
        return Path(tempfile.mkdtemp(prefix=prefix, suffix=".tmp", dir=dest.parent))
    fd, name = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=dest.parent)
    os.close(fd)
    return Path(name)


@contextmanager
def atomic_file(dest: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``dest``; rename it onto ``dest`` if the block succeeds."""
    dest = Path(dest)
    tmp = _temp_sibling(dest, directory=False)
    try:
        yield tmp
        os.chmod(tmp, _default_mode(directory=False))
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_dir(dest: str | Path, *, force: bool = False) -> Iterator[Path]:
    """Yield a temporary directory; it replaces ``dest`` only once the block has succeeded.

    An existing ``dest`` is kept untouched unless ``force`` is set, and even then it is only
    removed after the new content is complete.
    """
    dest = Path(dest)
    if dest.exists() and not force:
        raise OutputExistsError("exists already; pass --force to replace it", path=dest)
    tmp = _temp_sibling(dest, directory=True)
    try:
        yield tmp
        os.chmod(tmp, _default_mode(directory=True))
        if dest.exists():
            old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
            os.replace(dest, old)
            os.replace(tmp, dest)
            shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()
        else:
            os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
