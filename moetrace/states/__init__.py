"""Fluctuation statistics, noise floor and transient/stable segmentation of expert loads.

``analyze_loads(loads)`` works on arrays; ``analyze(trace)`` reads the trace's counts once and
takes top-k from its metadata. See docs/analysis.md.
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
from moetrace.states.noise import NoiseFloor
from moetrace.states.segment import STABLE, TRANSIENT, Segment
from moetrace.trace import Trace


def analyze(trace: Trace, **options) -> Analysis:
    """:func:`analyze_loads` over all of ``trace``; top-k from its metadata unless given."""
    options.setdefault("top_k", trace.metadata.top_k or 1)
    return analyze_loads(trace.loads(), **options)


__all__ = ["DEFAULT_SENSITIVITY", "DEFAULT_STABLE_RATIO", "DEFAULT_WINDOW", "STABLE", "TRANSIENT",
           "Analysis", "LayerAnalysis", "NoiseFloor", "Segment", "analyze", "analyze_loads"]
