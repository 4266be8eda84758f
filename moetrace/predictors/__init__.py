"""Load-share predictors behind one protocol, registered by name in one explicit registry."""

from moetrace.predictors.base import (
    REGISTRY,
    Predictor,
    PredictorOptions,
    make_predictor,
    missing_extra,
    register,
)
from moetrace.predictors.arima import ArimaPredictor
from moetrace.predictors.auto import AutoPredictor
from moetrace.predictors.drift import DriftPredictor
from moetrace.predictors.naive import NaivePredictor
from moetrace.predictors.sw_avg import SlidingWindowAveragePredictor

register("naive", NaivePredictor)
register("sw_avg", SlidingWindowAveragePredictor)
register("arima", ArimaPredictor)
register("drift", DriftPredictor)
register("auto", AutoPredictor)


def _lstm(options: PredictorOptions, **inputs) -> Predictor:
    """torch is an optional extra, imported only when an LSTM is asked for."""
    from moetrace.predictors.lstm import LSTMPredictor

    return LSTMPredictor(options, **inputs)


register("lstm", _lstm, needs=("torch", "lstm"))

__all__ = ["REGISTRY", "Predictor", "PredictorOptions", "make_predictor", "missing_extra",
           "register"]
