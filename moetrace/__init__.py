"""moetrace: record, analyze and forecast per-expert token loads of MoE training.

The public API is re-exported here; the CLI (``moetrace.cli``) is a thin layer over it.
"""

from moetrace.backtest import backtest
from moetrace.errors import MoetraceError, TraceError
from moetrace.predictors import PredictorOptions, make_predictor
from moetrace.predictors.forecast import forecast_loads, forecast_trace
from moetrace.report import build_report
from moetrace.simulate import simulate_trace
from moetrace.trace import Loads, Trace, TraceMetadata, read_trace, write_trace

__version__ = "0.1.0"

__all__ = [
    "Loads",
    "MoetraceError",
    "PredictorOptions",
    "Trace",
    "TraceError",
    "TraceMetadata",
    "__version__",
    "backtest",
    "build_report",
    "forecast_loads",
    "forecast_trace",
    "make_predictor",
    "read_trace",
    "simulate_trace",
    "write_trace",
]
