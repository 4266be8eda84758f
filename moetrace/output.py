"""The one output policy of every command that writes, and the atomic writing under it.

1. An output that exists is refused unless ``force`` is given.
2. An output may never be, lie inside, or contain an input of the same command (compared on
   resolved paths, symlinks followed), with or without ``force``.
3. With ``force`` a file output replaces a file; a directory output replaces only a directory
   that moetrace wrote (it holds the marker file :data:`MARKER`, or only ``rank=R``
   recording partitions) or an empty one. Anything else is refused, naming it.
4. Writing is atomic: everything goes to a temporary sibling that replaces the destination
   only once it is complete. A directory replaces its predecessor in one atomic exchange
   (``renameat2(RENAME_EXCHANGE)`` on Linux); where that is unavailable it takes two renames,
   and a writer killed between them leaves the previous output beside the path, which the
   next writer of that path puts back before it starts.
5. Temporary siblings carry the writer's host and PID (``.NAME.moetrace-PID@HOST.*``); the
   next writer of the same path removes those of writers that are no longer alive.

Library functions that write call :func:`write_file` / :func:`write_dir` (or
:func:`check_output` early, to fail before minutes of work), so the policy holds for the
Python API as it does for the CLI.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from moetrace.errors import OutputError, OutputExistsError
from moetrace.paths import expand

#: Every directory moetrace writes holds this file, which is what makes it moetrace's to replace.
MARKER = ".moetrace-output"
_RANK_DIR = re.compile(r"^rank=\d+$")
_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname().split(".")[0]) or "host"
_LEFTOVER = re.compile(r"^\.(?P<name>.+)\.moetrace-(?P<pid>\d+)@(?P<host>[A-Za-z0-9-]+)\."
                       r"[^.]+\.(?P<kind>tmp|old)$")

Kind = Literal["file", "dir"]


def _real(path: Path) -> Path:
    return Path(os.path.realpath(path))


def _inside(child: Path, parent: Path) -> bool:
    return child != parent and child.is_relative_to(parent)


def check_output(dest: str | Path, *, kind: Kind, inputs: Iterable[str | Path] = (),
                 force: bool = False) -> Path:
    """Raise :class:`OutputError` if writing ``dest`` would break the policy; return it.

    Leftovers of dead writers of ``dest`` are dealt with first (see :func:`clean_leftovers`),
    so the check sees the path as the last complete writer left it."""
    dest = Path(dest)
    clean_leftovers(dest)
    real = _real(dest)
    for label in inputs:
        for given in expand(label):
            if not given.exists():
                continue
            source = _real(given)
            if real == source:
                raise OutputError(f"is an input of this command ({given}); write the output "
                                  "elsewhere", path=dest)
            if source.is_dir() and _inside(real, source):
                raise OutputError(f"lies inside the input directory {given}; write the output "
                                  "elsewhere", path=dest)
            if _inside(source, real):
                raise OutputError(f"contains the input {given}; write the output elsewhere",
                                  path=dest)
    if not (dest.exists() or dest.is_symlink()):
        return dest
    if not force:
        raise OutputExistsError("exists already; pass --force to replace it", path=dest)
    if kind == "file" and dest.is_dir():
        raise OutputError("is a directory; refusing to replace it with a file", path=dest)
    if kind == "dir":
        if not dest.is_dir():
            raise OutputError("is a file, not an output directory; refusing to replace it",
                              path=dest)
        if not is_ours(dest):
            raise OutputError(f"is a directory moetrace did not write (no {MARKER} marker); "
                              "refusing to replace it, even with --force", path=dest)
    return dest


def check_outputs(outputs: Iterable[tuple[str | Path | None, Kind]], *,
                  inputs: Iterable[str | Path] = (), force: bool = False) -> list[Path]:
    """Check every output of one command before any is written (or any work is done): each
    under :func:`check_output`, and all distinct from each other (two options naming one
    path, or one output inside another's directory, would make the second write replace or
    land inside the first). Outputs given as None are skipped."""
    given = [(Path(path), kind) for path, kind in outputs if path is not None]
    inputs = list(inputs)
    seen: list[tuple[Path, Path, Kind]] = []
    for path, kind in given:
        real = _real(path)
        for other, other_real, other_kind in seen:
            if real == other_real:
                raise OutputError(f"is named twice ({other} and {path}); give each output its "
                                  "own path", path=path)
            for inner, outer, outer_kind in ((real, other_real, other_kind),
                                             (other_real, real, kind)):
                if outer_kind == "dir" and _inside(inner, outer):
                    raise OutputError(f"and {other} are outputs of this command, one inside "
                                      "the other's directory; give them separate places",
                                      path=path)
        seen.append((path, real, kind))
    return [check_output(path, kind=kind, inputs=inputs, force=force) for path, kind in given]


def is_ours(directory: Path) -> bool:
    """Whether moetrace may replace ``directory``: marked, empty, or only rank partitions."""
    if (directory / MARKER).is_file():
        return True
    names = [p.name for p in directory.iterdir()]
    return all(_RANK_DIR.match(n) or n.startswith(".") for n in names) and \
        not any(n.startswith(".") and not _LEFTOVER.match(n) for n in names)


def mark(directory: str | Path, **about) -> None:
    """Put the marker into a directory moetrace writes (idempotent, atomic)."""
    directory = Path(directory)
    marker = directory / MARKER
    if marker.is_file():
        return
    fd, name = tempfile.mkstemp(prefix=f".{MARKER}.", dir=directory)
    with os.fdopen(fd, "w") as handle:
        json.dump({"written_by": "moetrace", **about}, handle)
    os.chmod(name, _default_mode(directory=False))
    os.replace(name, marker)


def _default_mode(directory: bool) -> int:
    """The mode a plain open()/mkdir() would give under the current umask (mkstemp uses 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_leftovers(dest: Path) -> None:
    """Remove temporaries of dead writers of ``dest``; put back an output a writer killed
    between its two renames left aside (only where no atomic exchange was available)."""
    parent = dest.parent
    if not parent.is_dir():
        return
    for entry in parent.iterdir():
        found = _LEFTOVER.match(entry.name)
        if (found is None or found["name"] != dest.name or found["host"] != _HOST
                or _alive(int(found["pid"]))):
            continue
        if found["kind"] == "old" and not (dest.exists() or dest.is_symlink()):
            os.replace(entry, dest)
        elif entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def _sibling(dest: Path) -> str:
    return f".{dest.name}.moetrace-{os.getpid()}@{_HOST}."


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2); False where the system cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                          ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


@contextmanager
def write_file(dest: str | Path, *, inputs: Iterable[str | Path] = (),
               force: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``dest``; it becomes ``dest`` if the block succeeds."""
    dest = check_output(dest, kind="file", inputs=inputs, force=force)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=_sibling(dest), suffix=".tmp", dir=dest.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, _default_mode(directory=False))
        if not force and (dest.exists() or dest.is_symlink()):  # appeared while we wrote
            raise OutputExistsError("exists already; pass --force to replace it", path=dest)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def write_dir(dest: str | Path, *, inputs: Iterable[str | Path] = (), force: bool = False,
              **about) -> Iterator[Path]:
    """Yield a temporary directory; marked as moetrace's, it replaces ``dest`` atomically once
    the block has succeeded. ``about`` goes into the marker (for example the command)."""
    dest = check_output(dest, kind="dir", inputs=inputs, force=force)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=_sibling(dest), suffix=".tmp", dir=dest.parent))
    try:
        yield tmp
        mark(tmp, **about)
        os.chmod(tmp, _default_mode(directory=True))
        if dest.exists() or dest.is_symlink():
            check_output(dest, kind="dir", force=force)  # still ours to replace?
            _replace_dir(tmp, dest)
        else:
            os.rename(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _replace_dir(tmp: Path, dest: Path) -> None:
    """Put the complete directory ``tmp`` at ``dest`` in place of the old one."""
    if _exchange(tmp, dest):  # tmp now holds the old output
        shutil.rmtree(tmp, ignore_errors=True)
        return
    old = Path(tempfile.mktemp(prefix=_sibling(dest), suffix=".old", dir=dest.parent))
    os.replace(dest, old)
    os.replace(tmp, dest)
    if old.is_dir() and not old.is_symlink():
        shutil.rmtree(old, ignore_errors=True)
    else:
        old.unlink(missing_ok=True)


def move_aside(dest: str | Path, *, force: bool = False) -> Path | None:
    """For outputs written in place as they grow (a recording): check ``dest`` under the
    policy and move an existing one aside; the caller deletes it (:func:`discard`) once the
    new output exists, or puts it back (:func:`restore`) if nothing new was written."""
    dest = check_output(dest, kind="dir", force=force)
    if not dest.exists():
        return None
    aside = Path(tempfile.mktemp(prefix=_sibling(dest), suffix=".old", dir=dest.parent))
    os.replace(dest, aside)
    return aside


def restore(aside: Path | None, dest: str | Path) -> None:
    """Put an output moved aside back at ``dest`` (removing what was written there since)."""
    if aside is None:
        return
    dest = Path(dest)
    if dest.exists():
        shutil.rmtree(dest, ignore_errors=True)
    os.replace(aside, dest)


def discard(aside: Path | None) -> None:
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)
