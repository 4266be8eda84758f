"""What `moetrace info` shows: a trace's dimensions, steps, gaps and tokens per step."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import polars as pl

from moetrace.trace.read import Trace
from moetrace.trace.schema import LAYER, TOKENS


def describe(trace: Trace) -> dict[str, Any]:
    """A JSON-ready description of a trace, computed from its per-(step, layer) summary."""
    per_layer = (
        trace.step_totals.group_by(LAYER)
        .agg(pl.col(TOKENS).min().alias("min"), pl.col(TOKENS).median().alias("median"),
             pl.col(TOKENS).max().alias("max"))
        .sort(LAYER)
    )
    steps = trace.steps
    return {
        "path": trace.path,
        "layers": trace.n_layers,
        "experts_per_layer": trace.n_experts,
        "ranks_summed": trace.has_rank,
        "checksummed": trace.checksummed,
        "integrity": trace.integrity,
        "steps": {
            "first": int(steps[0]),
            "last": int(steps[-1]),
            "count": int(len(steps)),
            "interval": trace.interval,
            "gaps": [{"first_missing": a, "last_missing": b} for a, b in trace.gaps],
            # missing samples: steps missing from a trace of every step, at a sampled
            # trace's interval otherwise
            "missing": int(sum((b - a) // trace.interval + 1 for a, b in trace.gaps)),
        },
        "tokens_per_step": [
            {"layer": row[LAYER], "min": int(row["min"]), "median": float(row["median"]),
             "max": int(row["max"])}
            for row in per_layer.iter_rows(named=True)
        ],
        "metadata": asdict(trace.metadata),
    }
