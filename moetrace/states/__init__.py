"""Fluctuation statistics, noise floor and transient/stable segmentation of expert loads.

``analyze_loads(loads)`` works on arrays (``moetrace.pipeline.analyze`` runs it over a whole
trace, a chunk of layers at a time). See docs/analysis.md.
"""

from __future__ import annotations

from moetrace.states.analysis import (
    DEFAULT_SENSITIVITY,
    DEFAULT_STABLE_RATIO,
    DEFAULT_WINDOW,
    Analysis,
    LayerAnalysis,
    analyze_loads,
)
from moetrace.states.export import SCHEMA_VERSION, to_json_dict
from moetrace.states.noise import NoiseFloor
from moetrace.states.segment import STABLE, TRANSIENT, Segment

__all__ = ["DEFAULT_SENSITIVITY", "DEFAULT_STABLE_RATIO", "DEFAULT_WINDOW", "SCHEMA_VERSION",
           "STABLE", "TRANSIENT", "Analysis", "LayerAnalysis", "NoiseFloor", "Segment",
           "analyze_loads", "to_json_dict"]
