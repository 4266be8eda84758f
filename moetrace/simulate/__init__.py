"""GPT-3-style expert-load simulator with known transient/stable ground truth.

``simulate_trace`` writes a trace file; ``simulate_counts`` / ``iter_counts`` give the counts
as arrays for tests and notebooks; ``make_config`` resolves a preset plus overrides and scenario
knobs into a :class:`SimConfig`. See docs/simulation.md.

The names below are imported on first use, so that naming the presets (``PRESETS``, as the
CLI's help does) does not load numpy and the trace writer.
"""

from __future__ import annotations

from moetrace.lazy import lazy_exports

_LAZY = {
    "PRESETS": "moetrace.simulate.config",
    "SCENARIO_KNOBS": "moetrace.simulate.config",
    "SimConfig": "moetrace.simulate.config",
    "make_config": "moetrace.simulate.config",
    "preset_names": "moetrace.simulate.config",
    "STREAM_STEPS": "moetrace.simulate.dynamics",
    "iter_counts": "moetrace.simulate.dynamics",
    "simulate_counts": "moetrace.simulate.dynamics",
    "Segment": "moetrace.simulate.truth",
    "Truth": "moetrace.simulate.truth",
    "ground_truth": "moetrace.simulate.truth",
    "volatility": "moetrace.simulate.truth",
    "simulate_trace": "moetrace.simulate.write",
}

__all__ = sorted(_LAZY)
__getattr__, __dir__ = lazy_exports("moetrace.simulate", _LAZY)
