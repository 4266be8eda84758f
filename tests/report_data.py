"""A small simulated trace shared by the report tests (2 layers x 8 experts, 1,600 steps)."""

from __future__ import annotations

from pathlib import Path

from moetrace.simulate import simulate_trace

#: Fast report settings for the small trace: short horizons, few origins.
FAST = dict(horizons=(100, 200), n_origins=5, min_history=200)
FAST_ARGS = ["--horizons", "100,200", "--origins", "5", "--min-history", "200"]


def small_trace(directory: Path) -> Path:
    return simulate_trace(directory / "small.parquet", preset="gpt3-125m", steps=1600, layers=2,
                          experts=8, tokens_per_step=20_000, seed=3)
