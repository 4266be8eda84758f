"""The one protocol every predictor follows, its options, and the registry by name.

A predictor is fitted on a history (a :class:`~moetrace.trace.Loads` holding only steps up to
and including the origin) and forecasts, for every layer and expert, the load share at each
of the next H steps. Forecasts are non-negative and sum to 1 over experts. The backtest engine
calls ``fit`` on the same object for successive, increasing origins, so a predictor may reuse
work from an earlier fit (for example ARIMA parameters) as long as it only uses the history it
is given.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from moetrace.errors import ParameterError
from moetrace.trace.shares import Loads


@dataclass(frozen=True)
class PredictorOptions:
    """Settings shared by all predictors; each reads the ones that apply to it."""

    window: int | None = None  # sw_avg window in steps (None: the predictor's default)
    bucket: int | None = None  # steps per bucket (None: the predictor's default)
    order: tuple[int, int, int] | None = None  # ARIMA (p, d, q); None: chosen automatically
    seed: int = 0
    train: Loads | None = None  # a separate training trace (LSTM), None: the history itself
    #: called as progress(task, done, total) during long fits; the CLI shows a progress bar.
    progress: Callable[[str, int, int], None] | None = field(default=None, compare=False)


class Predictor(Protocol):
    """Fit on history, forecast shares of the next ``horizon`` steps."""

    name: str

    def fit(self, history: Loads) -> "Predictor":
        """Fit on ``history`` (every step of it is at or before the origin)."""
        ...

    def forecast(self, horizon: int) -> np.ndarray:
        """Shares for steps origin+1 .. origin+horizon, shape (layers, horizon, experts)."""
        ...


#: name -> factory taking PredictorOptions; filled by moetrace.predictors (explicit, no scans).
REGISTRY: dict[str, Callable[[PredictorOptions], Predictor]] = {}


def register(name: str, factory: Callable[[PredictorOptions], Predictor]) -> None:
    REGISTRY[name] = factory


def make_predictor(name: str, options: PredictorOptions | None = None) -> Predictor:
    """A new, unfitted predictor by registered name."""
    if name not in REGISTRY:
        raise ParameterError(f"unknown predictor '{name}' (known: {', '.join(sorted(REGISTRY))})")
    return REGISTRY[name](options or PredictorOptions())
