"""Simulating the 350M preset for 20,000 steps (12 x 128 experts, ~31M rows) to Parquet."""

from __future__ import annotations

from benchmarks.common import measure, print_figures

_CODE = """
import os, tempfile
from moetrace.simulate import simulate_trace
with tempfile.TemporaryDirectory() as tmp:
    out = os.path.join(tmp, "t.parquet")
    with timed("simulate gpt3-350m x 20,000 steps to Parquet"):
        simulate_trace(out, preset="gpt3-350m", steps=20_000, seed=0)
"""


def main(runs: int) -> None:
    print_figures("simulate: gpt3-350m, 20,000 steps, 31.5M rows", measure(_CODE, runs), runs)


if __name__ == "__main__":
    main(runs=3)
