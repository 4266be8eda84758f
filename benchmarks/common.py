"""Run a piece of Python in fresh processes and report median time and peak memory.

Each run is a new interpreter (so peak RSS is that run's own), the snippet times its measured
part itself with ``timed()`` and the harness reads the figure back; imports are not counted.

Before/after in one run: with ``--baseline DIR`` (a checkout of another moetrace version,
for example ``git worktree add /tmp/base REV``) every measured run is done twice, alternating,
once importing moetrace from DIR and once from this checkout, and both medians are printed,
so drift of a shared machine hits both alike.
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


#: A checkout of another moetrace to compare against (set by ``--baseline``), or None.
BASELINE: str | None = None
_BASE_TAG = " [baseline]"


def _run_once(code: str, env: dict, figures: dict[str, list[float]], tag: str,
              cwd: str | None) -> None:
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", _PRELUDE + code + _EPILOGUE],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **env}, cwd=cwd)
    _, status, usage = os.wait4(proc.pid, 0)
    out, err = proc.stdout.read(), proc.stderr.read()
    if status != 0:
        raise RuntimeError(f"benchmark run failed:\n{err}")
    line = next(x for x in out.splitlines() if x.startswith("__FIGURES__"))
    for name, value in json.loads(line[len("__FIGURES__"):]).items():
        figures.setdefault(name + " (s)" + tag, []).append(value)
    figures.setdefault("process wall (s)" + tag, []).append(time.perf_counter() - start)
    figures.setdefault("process CPU (s)" + tag, []).append(usage.ru_utime + usage.ru_stime)
    figures.setdefault("peak RSS (MiB)" + tag, []).append(usage.ru_maxrss / 1024)


def measure(code: str, runs: int = 3, env: dict | None = None,
            compare: bool = True) -> dict[str, float]:
    """Median of each ``timed`` figure and of the peak RSS (MiB) over ``runs`` fresh processes
    (and, with a baseline set and ``compare``, the same for the baseline, run alternately)."""
    figures: dict[str, list[float]] = {}
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for _ in range(runs):
        if BASELINE and compare:
            # run outside this checkout so that the baseline's moetrace is the one imported
            _run_once(code, {**(env or {}), "PYTHONPATH": BASELINE}, figures, _BASE_TAG,
                      cwd=BASELINE)
        _run_once(code, {**(env or {}), "PYTHONPATH": here}, figures, "", cwd=here)
    return {name: statistics.median(values) for name, values in figures.items()}


def print_figures(title: str, figures: dict[str, float], runs: int) -> None:
    print(f"\n## {title}  (median of {runs} runs, {os.cpu_count()} CPUs)")
    for name, value in figures.items():
        if name.endswith(_BASE_TAG):
            continue
        base = figures.get(name + _BASE_TAG)
        versus = f"   baseline {base:10.2f}   ratio {value / base:5.2f}" if base else ""
        print(f"  {name:<48} {value:10.2f}{versus}")
