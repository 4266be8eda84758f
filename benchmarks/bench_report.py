"""The full default report (four predictors, 1k and 2k horizons) on the 350M preset, 20,000 steps.

Target: under 3 minutes on 2 cores. The trace is simulated once (not timed); each run is a
fresh process timing ``build_report`` with its defaults, from reading the trace to the last file.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from benchmarks.common import measure, print_figures

_MAKE = """
from moetrace.simulate import simulate_trace
simulate_trace({path!r}, preset="gpt3-350m", steps=20_000, seed=0)
"""

_REPORT = """
import os
import moetrace  # moetrace.build_report: the library's one-call report in every version
with timed("report: read, analyze, backtest, write"):  # a directory per run: versions differ
    report = moetrace.build_report({path!r}, {out!r} + str(os.getpid()), force=True)
for name, seconds in report.document["timings"]["backtest_seconds"].items():
    _FIGURES["backtest " + name] = seconds
"""


def main(runs: int = 3) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path, out = str(Path(tmp) / "t.parquet"), str(Path(tmp) / "report")
        measure(_MAKE.format(path=path), runs=1, compare=False)
        figures = measure(_REPORT.format(path=path, out=out), runs=runs)
    print_figures("report: gpt3-350m x 20,000 steps, default predictors and horizons", figures,
                  runs)


if __name__ == "__main__":
    main(runs=int(sys.argv[1]) if len(sys.argv) > 1 else 3)
