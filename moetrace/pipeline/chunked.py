"""Whole-trace work done a chunk of layers at a time, on any executor.

A validated trace is split into layer chunks that fit the memory budget
(moetrace/scale/chunks.py); a task function (moetrace/scale/tasks.py) runs on each chunk on the
executor (moetrace/scale/executor.py); the caller joins the results with the result type's own
``merge``. A trace that fits one chunk runs in this process, exactly as a library call on its
whole loads would.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from moetrace.progress import Progress, offset
from moetrace.scale.chunks import layer_chunks
from moetrace.scale.executor import Executor, Local, executor_width, make_executor
from moetrace.trace.read import Trace


@dataclass(frozen=True)
class Execution:
    """Where and how whole-trace work runs: the executor (None: a local process pool over
    the machine's cores), the memory budget of one chunk (None: moetrace.scale's default)
    and the progress callback."""

    executor: Executor | None = None
    memory: int | None = None
    progress: Progress | None = None


@dataclass(frozen=True)
class Chunked:
    """One trace, its chunks of layer positions, and the executor they run on."""

    trace: Trace
    chunks: list[list[int]]
    executor: Executor
    progress: Progress | None

    @classmethod
    def of(cls, trace: Trace, work: str, run: Execution) -> "Chunked":
        chunks = layer_chunks(trace.n_layers, trace.n_steps, trace.n_experts, work, run.memory)
        return cls(trace, chunks, run.executor or make_executor(), run.progress)

    @property
    def width(self) -> int:
        """Tasks the executor runs at once."""
        return executor_width(self.executor)

    def in_process(self, tasks: int) -> bool:
        """``tasks`` tasks run here, one after another: a progress callback may go into them."""
        return tasks == 1 or (isinstance(self.executor, Local) and self.executor.workers <= 1)

    def run(self, fn: Callable, settings, rows: Callable[[list[int]], tuple] = lambda c: (),
            task: str = "layer chunks", per_layer: bool = False) -> list:
        """``fn(handle, chunk, settings, *rows(chunk)[, progress])`` for every chunk, in
        order. In this process each task gets the progress callback (``per_layer``: offset
        by the layers of the chunks before it); elsewhere the executor reports chunks done.
        ``settings`` a list (:class:`Units`): a task for every chunk and each of them, the
        results grouped by chunk."""
        results = list(self.stream(fn, settings, rows, task, per_layer))
        if not isinstance(settings, Units):
            return results
        n = len(settings)
        return [results[i:i + n] for i in range(0, len(results), n)]

    def stream(self, fn: Callable, settings, rows: Callable[[list[int]], tuple] = lambda c: (),
               task: str = "layer chunks", per_layer: bool = False) -> Iterator:
        """:meth:`run`'s results one at a time, in chunk order, for a merge that fills its
        arrays as they come (one chunk's result held at a time, not all of them)."""
        handle = self.trace.handle()
        units = settings if isinstance(settings, Units) else [settings]
        here = self.in_process(len(self.chunks) * len(units))
        work = []
        for chunk in self.chunks:
            for unit in units:
                args = (handle, chunk, unit, *rows(chunk))
                if here and self.progress is not None:
                    args += (offset(self.progress, chunk[0], self.trace.n_layers)
                             if per_layer else self.progress,)
                work.append(args)
        done = None
        if not here and self.progress is not None:
            done = lambda finished, total: self.progress(finished, total, task)  # noqa: E731
        return self.executor.imap(fn, work, done=done)


class Units(list):
    """Settings of several tasks per layer chunk (units of work smaller than a chunk: a
    predictor, a run of origins), for :meth:`Chunked.run`."""


def layer_rows(*labels: np.ndarray | None) -> Callable[[list[int]], tuple]:
    """A chunk's rows of each (L, T) array of labels (None stays None), as task arguments."""
    return lambda chunk: tuple(None if x is None else x[chunk] for x in labels)
