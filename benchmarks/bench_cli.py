"""How long the CLI takes to answer ``--help``, against a bare interpreter start (target: at
most 6x ``python -c pass``), from fresh processes.

The console script is run as users run it (``moetrace --help``, ``moetrace report --help``,
every command's), each run paired with a bare ``python -c pass`` of the same interpreter
just before it, so that the machine's load hits both alike; the figures are the medians over
``runs`` x 5 pairs and their ratio.

    python -m benchmarks cli [--runs N]
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

#: the most a ``--help`` may take, in bare interpreter starts (issue 28)
TARGET = 6.0


def _entry_point() -> list[str]:
    script = Path(sys.executable).parent / "moetrace"
    found = str(script) if script.exists() else shutil.which("moetrace")
    return [found] if found else [sys.executable, "-m", "moetrace"]


def _commands() -> list[str]:
    from moetrace.cli import app

    return app.list_commands(None)


def _wall(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(args, check=True, capture_output=True)
    return time.perf_counter() - start


def main(runs: int = 3) -> None:
    base = _entry_point()
    bare = [sys.executable, "-c", "pass"]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\n## cli: --help against `python -c pass`  (median of {runs * 5} pairs, "
          f"{os.cpu_count()} CPUs, load average {load:.2f}; target at most {TARGET:g}x)")
    worst = 0.0
    for args in [["--help"]] + [[name, "--help"] for name in _commands()]:
        pairs = [(_wall(bare), _wall(base + args)) for _ in range(runs * 5)]
        python = statistics.median(p[0] for p in pairs)
        helped = statistics.median(p[1] for p in pairs)
        ratio = helped / python
        worst = max(worst, ratio)
        print(f"  {'moetrace ' + ' '.join(args):<32} {helped:7.3f} s   python -c pass "
              f"{python:7.3f} s   ratio {ratio:5.2f}{'' if ratio <= TARGET else '  OVER'}")
    print(f"  worst ratio {worst:.2f} ({'within' if worst <= TARGET else 'over'} the target)")


if __name__ == "__main__":
    main(runs=int(sys.argv[1]) if len(sys.argv) > 1 else 3)
