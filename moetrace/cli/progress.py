"""Progress bars of long commands, drawn on stderr so stdout stays for results (and JSON)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console

#: Where progress goes: the terminal's stderr (nothing is drawn when it is not a terminal).
progress_console = Console(stderr=True, highlight=False)

#: ``update(done, total, label)``: ``label`` (optional) names the task or what is running.
Update = Callable[..., None]


@contextmanager
def progress_bar(description: str, *, quiet: bool = False,
                 tasks: bool = False) -> Iterator[Update]:
    """Yield ``update(done, total, label=None)``. With ``tasks``, each label is a bar of its
    own (predict: one per predictor stage); otherwise the label describes the one bar."""
    if quiet or not progress_console.is_terminal:  # nothing to draw on a pipe or a log file
        yield lambda *args, **kwargs: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with Progress(*columns, console=progress_console, transient=True) as bar:
        ids: dict[str, int] = {}
        main = None if tasks else bar.add_task(description, total=None)

        def update(done: int, total: int | None, label: str | None = None) -> None:
            if tasks:
                key = label or description
                if key not in ids:
                    ids[key] = bar.add_task(key, total=total)
                bar.update(ids[key], completed=done, total=total)
            else:
                bar.update(main, completed=done, total=total,
                           description=description if label is None else
                           f"{description}: {label}")

        yield update
