"""How long the CLI takes to answer ``--help`` (target: under 0.2 s), from a fresh process.

The console script is run as users run it (``moetrace --help``, ``moetrace report --help``);
the figure is the wall time of the whole process, median over ``runs`` x 5 runs.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path


def _entry_point() -> list[str]:
    script = Path(sys.executable).parent / "moetrace"
    found = str(script) if script.exists() else shutil.which("moetrace")
    return [found] if found else [sys.executable, "-m", "moetrace"]


def main(runs: int = 3) -> None:
    base = _entry_point()
    print(f"\n## cli: --help wall time  (median of {runs * 5} runs, {os.cpu_count()} CPUs)")
    for args in (["--help"], ["report", "--help"], ["plan", "--help"]):
        times = []
        for _ in range(runs * 5):
            start = time.perf_counter()
            subprocess.run(base + args, check=True, capture_output=True)
            times.append(time.perf_counter() - start)
        print(f"  {'moetrace ' + ' '.join(args):<48} {statistics.median(times):10.3f} s")


if __name__ == "__main__":
    main(runs=int(sys.argv[1]) if len(sys.argv) > 1 else 3)
