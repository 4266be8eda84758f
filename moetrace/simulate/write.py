"""Writing a simulated run as a canonical trace, a chunk of steps at a time."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from moetrace.simulate.config import make_config
from moetrace.simulate.dynamics import STREAM_STEPS, iter_counts
from moetrace.simulate.truth import ground_truth
from moetrace.trace.schema import TraceMetadata
from moetrace.trace.write import TraceWriter, write_layer_groups

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
            # a row group per layer and block of steps: reading a few layers skips the rest
            steps = np.arange(first, first + counts.shape[1], dtype=np.int64)
            write_layer_groups(writer, steps, range(config.n_layers), counts)
    return Path(out)



