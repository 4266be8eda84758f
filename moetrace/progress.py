"""The one shape of a progress callback, for every long piece of work in the library.

``progress(done, total, task)``: ``done`` units of ``total`` (None: not known yet) are
finished in the part of the work called ``task`` ("analyze: layers", "auto @ step 4,000").
The library never prints; the CLI turns these calls into progress bars on stderr.
"""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[int, "int | None", str], None]


def silent(done: int, total: int | None, task: str) -> None:
    """A progress callback that shows nothing."""


def offset(progress: Progress | None, before: int, total: int) -> Progress | None:
    """``progress`` for a part of the work that starts after ``before`` of ``total`` units:
    a chunk of layers reports layers done over the whole trace."""
    if progress is None:
        return None
    return lambda done, _total, task: progress(before + done, total, task)
