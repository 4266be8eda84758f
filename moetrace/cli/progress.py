"""Progress bars of long commands, drawn on stderr so stdout stays for results (and JSON)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from moetrace.progress import Progress, silent


@contextmanager
def progress_bar(description: str, *, quiet: bool = False,
                 tasks: bool = False) -> Iterator[Progress]:
    """Yield ``progress(done, total, task)`` (moetrace.progress). With ``tasks``, each task is
    a bar of its own (predict: one per predictor stage); otherwise the task names what the
    one bar is at. Nothing is drawn with ``quiet`` or when stderr is not a terminal."""
    if quiet or not sys.stderr.isatty():
        yield silent
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress as Bars,
        TextColumn,
        TimeElapsedColumn,
    )

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with Bars(*columns, console=Console(stderr=True, highlight=False), transient=True) as bar:
        ids: dict[str, int] = {}
        main = None if tasks else bar.add_task(description, total=None)

        def update(done: int, total: int | None, task: str = "") -> None:
            if tasks:
                key = task or description
                if key not in ids:
                    ids[key] = bar.add_task(key, total=total)
                bar.update(ids[key], completed=done, total=total)
            else:
                bar.update(main, completed=done, total=total,
                           description=f"{description}: {task}" if task else description)

        yield update
