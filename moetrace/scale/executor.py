"""Where work runs: serially, in a pool of local processes, or as tasks on a Ray cluster.

The unit of work is a pure function of plain arguments (a trace handle, a chunk of layers,
settings), so the three executors run the very same function and a backend is a choice of
executor, not a second code path (Ray's task idiom: ``ray.remote`` over the function,
``ray.get`` on the list of references). Results come back in the order of the tasks.

- ``local`` (the default): a process pool over the machine's cores (``workers``; 1 runs in
  this process, with no pool at all);
- ``ray``: the tasks go to a Ray cluster, ``address`` or ``MOETRACE_RAY_ADDRESS`` (default:
  start a local one for the command). Workers read the trace from its path, so every node
  must reach it (shared storage); what travels through Ray's object store is the handle
  (paths, dimensions, the validated per-step totals) and the results, never the rows.
"""

from __future__ import annotations

import copy
import os
import signal
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from multiprocessing import get_context
from typing import Any, Protocol

from moetrace.errors import MissingExtraError, ParameterError

BACKENDS = ("local", "ray")
#: cores one task may use for its own parallel parts (ARIMA's pool, BLAS threads); set in every
#: worker so that nested pools do not oversubscribe the machine
CORES_VARIABLE = "MOETRACE_CORES"


def machine_cores() -> int:
    """Cores this command may run on (its CPU affinity: a container's or a job's share, not
    the host's count)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1  # pragma: no cover - macOS, Windows


def _limit(cores: int) -> None:
    """A worker's share of the machine: nested pools and BLAS threads stay within it."""
    os.environ[CORES_VARIABLE] = str(cores)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(cores)
    except ImportError:  # pragma: no cover - a dependency of moetrace
        pass


def _warnings_as(filters: list) -> None:
    """The calling process's warning filters, in a worker: a warning a command would not
    show (or would raise, under ``python -W error``) is treated alike in its workers."""
    warnings.filters[:] = filters


def _start_worker(cores: int, parent: int, filters: list) -> None:
    """A pool worker's set-up: its share of the cores, the caller's warning filters, and on
    Linux its end when the command ends however it ends (killed too: a worker blocked on its
    queue would otherwise outlive it, holding its memory)."""
    _limit(cores)
    _warnings_as(filters)
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):  # pragma: no cover - no prctl: end with the queue
            return
        if os.getppid() != parent:  # the command ended before this line ran
            os._exit(1)


def _limited(fn: Callable[..., Any], cores: int, filters: list, *args: Any) -> Any:
    """``fn(*args)`` within ``cores`` cores, under the caller's warning filters (the Ray
    task's body)."""
    _limit(cores)
    _warnings_as(filters)
    return fn(*args)


class Executor(Protocol):
    name: str

    def map(self, fn: Callable[..., Any], tasks: Sequence[tuple],
            done: Callable[[int, int], None] | None = None) -> list[Any]:
        """``[fn(*task) for task in tasks]``, possibly in parallel, in task order;
        ``done(finished, total)`` after each task finishes."""
        ...

    def imap(self, fn: Callable[..., Any], tasks: Sequence[tuple],
             done: Callable[[int, int], None] | None = None) -> Iterator[Any]:
        """The results of :meth:`map` one at a time, in task order, each let go of here once
        it is handed over (so a caller that merges them as they come holds one at a time)."""
        ...


@dataclass
class Local:
    """A pool of ``workers`` processes (started with ``spawn``: no forked threads of polars or
    torch); one worker runs the tasks here, in order."""

    workers: int = 1
    name: str = "local"

    def map(self, fn, tasks, done=None):
        return list(self.imap(fn, tasks, done))

    def imap(self, fn, tasks, done=None):
        if self.workers <= 1 or len(tasks) <= 1:
            for finished, task in enumerate(tasks, start=1):
                result = fn(*task)
                if done is not None:
                    done(finished, len(tasks))
                yield result
            return
        workers = min(self.workers, len(tasks))
        cores = max(1, machine_cores() // workers)
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"),
                                   initializer=_start_worker,
                                   initargs=(cores, os.getpid(), list(warnings.filters)))
        futures = [pool.submit(fn, *task) for task in tasks]
        pending, finished = set(futures), 0
        try:
            for i in range(len(futures)):
                while futures[i] in pending:
                    ready, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for future in ready:
                        if future.exception() is not None:  # raised once the running
                            for other in pending:           # tasks end; the tasks not
                                other.cancel()              # yet started never run
                            future.result()
                        finished += 1
                        if done is not None:
                            done(finished, len(tasks))
                result, futures[i] = futures[i].result(), None
                yield result
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


@dataclass
class Ray:
    """Tasks on a Ray cluster (``address``: an existing cluster; None: a local one started
    for this command and stopped after it)."""

    address: str | None = None
    workers: int | None = None  # CPUs of a local cluster (None: the machine's)
    name: str = "ray"

    def map(self, fn, tasks, done=None):
        return list(self.imap(fn, tasks, done))

    def width(self) -> int:
        """The CPUs tasks may use: a local cluster's, else the cluster's at ``address``."""
        if self.workers or not self.address:
            return self.workers or machine_cores()
        import ray

        if ray.is_initialized():
            return max(1, int(ray.cluster_resources().get("CPU", 1)))
        ray.init(address=self.address, log_to_driver=False, configure_logging=False)
        try:
            return max(1, int(ray.cluster_resources().get("CPU", 1)))
        finally:
            ray.shutdown()

    def imap(self, fn, tasks, done=None):
        try:
            import ray
        except ImportError:
            raise MissingExtraError("ray", "ray", "--backend ray") from None
        started = not ray.is_initialized()
        if started:
            # "local": a cluster of its own, where Ray's default (None) would join the
            # cluster this machine last started (`ray start`) or RAY_ADDRESS names
            options = {"address": self.address} if self.address else {
                "address": "local", "num_cpus": self.workers or machine_cores(),
                "include_dashboard": False}
            ray.init(log_to_driver=False, configure_logging=False, **options)
        try:
            remote = ray.remote(num_cpus=1)(_limited)
            filters = list(warnings.filters)
            refs = [remote.remote(fn, 1, filters, *task) for task in tasks]
            pending, finished = list(refs), 0
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                finished += len(ready)
                if done is not None:
                    done(finished, len(tasks))
            for i in range(len(refs)):
                # a copy the command owns: ray.get's arrays are views of Ray's object store,
                # which is unmapped when the command's own connection shuts down below, and a
                # result outlives it (one chunk's result is the merged result as it is)
                result, refs[i] = copy.deepcopy(ray.get(refs[i])), None
                yield result
        finally:
            if started:
                ray.shutdown()


def executor_width(executor) -> int:
    """Tasks ``executor`` runs at once: a local pool's workers; a Ray cluster's CPUs (those
    it was started with, else those of the cluster at its address)."""
    if isinstance(executor, Ray):
        return executor.width()
    return max(1, int(getattr(executor, "workers", 1) or 1))


def make_executor(backend: str | None = None, workers: int | None = None,
                  address: str | None = None) -> Executor:
    """The executor for ``backend`` (default: ``MOETRACE_BACKEND`` or local); ``workers``
    defaults to the machine's cores for local."""
    backend = backend or os.environ.get("MOETRACE_BACKEND") or "local"
    if backend not in BACKENDS:
        raise ParameterError(f"--backend takes {' or '.join(BACKENDS)}, got '{backend}'")
    if workers is not None and workers < 1:
        raise ParameterError(f"--workers must be at least 1, got {workers}")
    if backend == "ray":
        import importlib.util

        if importlib.util.find_spec("ray") is None:
            raise MissingExtraError("ray", "ray", "--backend ray")
        return Ray(address or os.environ.get("MOETRACE_RAY_ADDRESS"), workers)
    return Local(workers if workers is not None else machine_cores())
