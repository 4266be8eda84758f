"""Writing a simulated run as a canonical trace, a chunk of steps at a time."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from moetrace.simulate.config import make_config
from moetrace.simulate.dynamics import STREAM_STEPS, iter_counts
from moetrace.simulate.truth import ground_truth
from moetrace.trace.schema import EXPERT, LAYER, STEP, TOKENS, TraceMetadata
from moetrace.trace.write import TraceWriter

#: Rows per Parquet row group we aim for; memory stays a few of these regardless of the run.
_ROWS_PER_CHUNK = 2_000_000


def simulate_trace(out: str | Path, *, preset: str, steps: int | None = None, seed: int = 0,
                   layers: int | None = None, experts: int | None = None,
                   top_k: int | None = None, tokens_per_step: int | None = None,
                   force: bool = False, **scenario: Any) -> Path:
    """Simulate a preset (shape overrides and scenario knobs as in ``make_config``) to ``out``.

    The file appears atomically; its metadata ``extra`` holds the seed, the resolved config,
    ``true_boundaries`` and ``true_segments``.
    """
    config = make_config(preset, steps=steps, layers=layers, experts=experts, top_k=top_k,
                         tokens_per_step=tokens_per_step, **scenario)
    truth = ground_truth(config)
    metadata = TraceMetadata(
        model=config.model, n_layers=config.n_layers, n_experts=config.n_experts,
        top_k=config.top_k, tokens_per_step=config.tokens_per_step, source="simulated",
        extra={"preset": preset, "seed": seed, "config": asdict(config), **truth.to_extra()})
    rows_per_step = config.n_layers * config.n_experts
    chunk = max(1, _ROWS_PER_CHUNK // (rows_per_step * STREAM_STEPS)) * STREAM_STEPS
    with TraceWriter(out, metadata, force=force) as writer:
        for first, counts in iter_counts(config, seed, chunk_steps=chunk):
            writer.write(_long_rows(first, counts))
    return Path(out)


def _long_rows(first: int, counts: np.ndarray) -> pl.DataFrame:
    """(L, T, E) counts as canonical long rows ordered by step, layer, expert."""
    n_layers, n_steps, n_experts = counts.shape
    per_step = n_layers * n_experts
    return pl.DataFrame({
        STEP: np.repeat(np.arange(first, first + n_steps, dtype=np.int64), per_step),
        LAYER: np.tile(np.repeat(np.arange(n_layers, dtype=np.int32), n_experts), n_steps),
        EXPERT: np.tile(np.arange(n_experts, dtype=np.int32), n_steps * n_layers),
        TOKENS: counts.transpose(1, 0, 2).ravel(),
    })
