"""Run a piece of Python in fresh processes and report median time and peak memory.

Each run is a new interpreter (so peak RSS is that run's own), the snippet times its measured
part itself with ``timed()`` and the harness reads the figure back; imports are not counted.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

_PRELUDE = """
import json as _json, time as _time
_FIGURES = {}
class timed:
    def __init__(self, name): self.name = name
    def __enter__(self): self.t0 = _time.perf_counter()
    def __exit__(self, *a): _FIGURES[self.name] = _time.perf_counter() - self.t0
"""
_EPILOGUE = "\nprint('__FIGURES__' + _json.dumps(_FIGURES))\n"


def measure(code: str, runs: int = 3, env: dict | None = None) -> dict[str, float]:
    """Median of each ``timed`` figure and of the peak RSS (MiB) over ``runs`` fresh processes."""
    figures: dict[str, list[float]] = {}
    for _ in range(runs):
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-c", _PRELUDE + code + _EPILOGUE],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, **(env or {})})
        _, status, usage = os.wait4(proc.pid, 0)
        out, err = proc.stdout.read(), proc.stderr.read()
        if status != 0:
            raise RuntimeError(f"benchmark run failed:\n{err}")
        line = next(x for x in out.splitlines() if x.startswith("__FIGURES__"))
        for name, value in json.loads(line[len("__FIGURES__"):]).items():
            figures.setdefault(name + " (s)", []).append(value)
        figures.setdefault("process wall (s)", []).append(time.perf_counter() - start)
        figures.setdefault("peak RSS (MiB)", []).append(usage.ru_maxrss / 1024)
    return {name: statistics.median(values) for name, values in figures.items()}


def print_figures(title: str, figures: dict[str, float], runs: int) -> None:
    print(f"\n## {title}  (median of {runs} runs, {os.cpu_count()} CPUs)")
    for name, value in figures.items():
        print(f"  {name:<48} {value:10.2f}")
