"""moetrace: record, analyze and forecast per-expert token loads of MoE training.

The public API is re-exported here, imported on first use (so ``import moetrace`` and the
CLI's ``--help`` stay quick); the CLI (``moetrace.cli``) is a thin layer over it.
"""

from __future__ import annotations

from moetrace.lazy import lazy_exports

__version__ = "0.3.0"

_LAZY = {
    "Loads": "moetrace.trace",
    "MoetraceError": "moetrace.errors",
    "PredictorOptions": "moetrace.predictors",
    "Trace": "moetrace.trace",
    "TraceError": "moetrace.errors",
    "TraceMetadata": "moetrace.trace",
    "backtest": "moetrace.backtest",
    "build_report": "moetrace.pipeline",
    "forecast_loads": "moetrace.forecast",
    "make_predictor": "moetrace.predictors",
    "read_trace": "moetrace.trace",
    "simulate_trace": "moetrace.simulate",
    "write_trace": "moetrace.trace",
}

__all__ = sorted([*_LAZY, "__version__"])
__getattr__, __dir__ = lazy_exports("moetrace", _LAZY, also=("__version__",))
