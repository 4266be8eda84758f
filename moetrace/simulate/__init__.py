"""GPT-3-style expert-load simulator with known transient/stable ground truth.

``simulate_trace`` writes a trace file; ``simulate_counts`` / ``iter_counts`` give the counts
as arrays for tests and notebooks; ``make_config`` resolves a preset plus overrides and scenario
knobs into a :class:`SimConfig`. See docs/simulation.md.
"""

from moetrace.simulate.config import PRESETS, SCENARIO_KNOBS, SimConfig, make_config
from moetrace.simulate.dynamics import STREAM_STEPS, iter_counts, simulate_counts
from moetrace.simulate.truth import Segment, Truth, ground_truth, volatility
from moetrace.simulate.write import simulate_trace

__all__ = ["PRESETS", "SCENARIO_KNOBS", "STREAM_STEPS", "Segment", "SimConfig", "Truth",
           "ground_truth", "iter_counts", "make_config", "simulate_counts", "simulate_trace",
           "volatility"]
