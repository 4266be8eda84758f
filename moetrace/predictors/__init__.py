"""Load-share predictors behind one protocol, registered by name."""

from moetrace.predictors.base import (
    REGISTRY,
    Predictor,
    PredictorOptions,
    make_predictor,
    register,
)

__all__ = ["REGISTRY", "Predictor", "PredictorOptions", "make_predictor", "register"]
