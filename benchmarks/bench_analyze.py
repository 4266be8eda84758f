"""`moetrace analyze` at scale: the 350M preset at 50,000 steps (12 x 128 experts, 77M rows).

Times each part of what the command does (read and validate, dense counts, the analysis,
writing --json and --out) in one fresh process, and its peak RSS.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from benchmarks.common import measure, print_figures

STEPS = 50_000

_MAKE = """
from moetrace.simulate import simulate_trace
simulate_trace({path!r}, preset="gpt3-350m", steps={steps}, seed=0)
"""

_ANALYZE = """
from moetrace.states import analyze_loads
from moetrace.states.export import write_json, write_out_dir
from moetrace.trace import read_trace
with timed("read_trace (validate)"):
    trace = read_trace({path!r})
with timed("loads() all layers"):
    loads = trace.loads()
with timed("analyze_loads (12 layers, window 100)"):
    analysis = analyze_loads(loads, top_k=1)
with timed("write --json"):
    write_json(analysis, {json!r})
with timed("write --out (Parquet + 12 figures)"):
    write_out_dir(analysis, loads, {out!r}, force=True)
"""


def main(runs: int = 3) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "trace.parquet")
        measure(_MAKE.format(path=path, steps=STEPS), runs=1, compare=False)
        code = _ANALYZE.format(path=path, json=str(Path(tmp) / "a.json"),
                               out=str(Path(tmp) / "out"))
        rows = 12 * 128 * STEPS
        print_figures(f"analyze: gpt3-350m, {STEPS:,} steps, {rows / 1e6:.0f}M rows",
                      measure(code, runs=runs), runs)


if __name__ == "__main__":
    main()
