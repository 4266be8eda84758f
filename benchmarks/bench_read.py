"""Reader at scale: validating open and dense loads of a 350M-sized trace (12 x 128 experts)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from benchmarks.common import measure, print_figures

_MAKE = """
import numpy as np, polars as pl
from moetrace.trace import TraceMetadata, TraceWriter
L, E, T, chunk = 12, 128, {steps}, 1000
rng = np.random.default_rng(0)
with TraceWriter({path!r}, TraceMetadata(n_layers=L, n_experts=E)) as w:
    for s in range(0, T, chunk):
        n = min(chunk, T - s)
        step = np.repeat(np.arange(s, s + n), L * E)
        layer = np.tile(np.repeat(np.arange(L), E), n)
        expert = np.tile(np.arange(E), n * L)
        w.write(pl.DataFrame({{"step": step, "layer": layer, "expert": expert,
                              "tokens": rng.integers(1, 8192, size=step.size)}}))
"""

_READ = """
from moetrace.trace import read_trace
with timed("read_trace (validate)"):
    trace = read_trace({path!r})
with timed("loads() all layers"):
    loads = trace.loads()
"""


def main(runs: int = 3) -> None:
    for steps in (20_000, 50_000):
        with tempfile.TemporaryDirectory() as tmp:
            path = str(Path(tmp) / "trace.parquet")
            measure(_MAKE.format(steps=steps, path=path), runs=1, compare=False)
            rows = 12 * 128 * steps
            figures = measure(_READ.format(path=path), runs=runs)
            print_figures(f"read: 12 layers x 128 experts x {steps:,} steps "
                          f"({rows / 1e6:.0f}M rows)",
                          figures, runs)


if __name__ == "__main__":
    main()
