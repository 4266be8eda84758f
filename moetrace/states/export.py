"""Machine-readable outputs of an analysis: the versioned JSON and the --out directory.

The JSON schema (``moetrace.analysis``, version :data:`SCHEMA_VERSION`) is documented in
docs/analysis.md. The --out directory holds ``states.parquet`` (one row per layer and step),
``windows.parquet`` (one row per layer and window) and ``figures/layer_<L>.png``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from moetrace.jsondoc import number
from moetrace.output import write_dir
from moetrace.states.analysis import Analysis, LayerAnalysis
from moetrace.states.segment import STABLE, TRANSIENT, Segment
from moetrace.trace.shares import Loads

if TYPE_CHECKING:
    from moetrace.trace.read import Trace

SCHEMA = "moetrace.analysis"
SCHEMA_VERSION = 2


def _segments(segments: list[Segment]) -> list[dict[str, Any]]:
    return [{"start": s.start, "end": s.end, "state": s.state} for s in segments]


def _layer(la: LayerAnalysis) -> dict[str, Any]:
    return {
        "layer": la.layer,
        "stable_from": la.stable_from,
        "segments": _segments(la.segments),
        "noise_floor": {state: {"value": number(f.value), "multinomial": number(f.multinomial),
                                "empirical": number(f.empirical), "scale": f.scale,
                                "reliable": f.reliable}
                        for state, f in la.noise_floor.items()},
        "fluctuation": {k: number(v) for k, v in la.fluctuation.items()},
        "imbalance": {k: number(v) for k, v in la.imbalance.items()},
        "noise_scale": la.noise_scale,
        "online": {"stable_from": la.online_stable_from, "detected_at": la.online_detected_at,
                   "delay": la.detection_delay, "confidence": la.online_confidence,
                   "calls": [{"at": at, "onset": onset, "state": "stable" if st else "transient"}
                             for at, onset, st in la.online_calls]},
    }


def to_json_dict(analysis: Analysis, trace: str | None = None) -> dict[str, Any]:
    """Everything the terminal table shows, plus segments and parameters (schema v2)."""
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "trace": trace,
        "parameters": {"window": analysis.window, "sensitivity": analysis.sensitivity,
                       "stable_ratio": analysis.stable_ratio, "top_k": analysis.top_k},
        "steps": {"first": int(analysis.steps[0]), "last": int(analysis.steps[-1]),
                  "count": int(len(analysis.steps)), "interval": analysis.interval},
        "model": {"stable_from": analysis.model_stable_from,
                  "segments": _segments(analysis.model_segments),
                  "verdict": analysis.verdict},
        "layers": [_layer(la) for la in analysis.layers],
    }


def states_frame(analysis: Analysis) -> pl.DataFrame:
    """One row per (layer, step): the state label and the per-step statistics."""
    n_layers, n_steps = analysis.stable.shape
    layer_ids = np.array([la.layer for la in analysis.layers], dtype=np.int32)
    stable = analysis.stable.ravel()
    return pl.DataFrame({
        "layer": np.repeat(layer_ids, n_steps),
        "step": np.tile(analysis.steps, n_layers),
        "state": pl.Series(np.where(stable, STABLE, TRANSIENT)).cast(pl.Categorical),
        "stable": stable,
        "online_stable": analysis.online_stable.ravel(),
        **{k: v.ravel() for k, v in analysis.step_stats.items()},
    })


def windows_frame(analysis: Analysis) -> pl.DataFrame:
    """One row per (layer, window), the window identified by its centre step."""
    n_layers, n_windows = analysis.window_stats["var_mean"].shape
    layer_ids = np.array([la.layer for la in analysis.layers], dtype=np.int32)
    return pl.DataFrame({
        "layer": np.repeat(layer_ids, n_windows),
        "centre_step": np.tile(analysis.window_steps, n_layers),
        **{k: v.ravel() for k, v in analysis.window_stats.items()},
    })


def write_out_dir(analysis: Analysis, source: "Loads | Trace", out: str | Path, *,
                  force: bool = False, trace_label: str | None = None) -> Path:
    """Write the Parquet tables and the per-layer figures into ``out``, all or nothing.

    ``source`` gives each layer's counts for its figure: dense ``Loads``, or a ``Trace`` read
    one layer at a time (bounded memory on a large trace)."""
    from moetrace.states.figures import layer_figure

    def counts(i: int) -> np.ndarray:
        if isinstance(source, Loads):
            return source.counts[i]
        return source.loads(layers=[analysis.layers[i].layer]).counts[0]

    with write_dir(out, inputs=[trace_label] if trace_label else (), force=force) as tmp:
        states_frame(analysis).write_parquet(tmp / "states.parquet")
        windows_frame(analysis).write_parquet(tmp / "windows.parquet")
        (tmp / "figures").mkdir()
        for i, la in enumerate(analysis.layers):
            layer_figure(analysis, i, counts(i), tmp / "figures" / f"layer_{la.layer}.png")
    return Path(out)
