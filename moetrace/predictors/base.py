"""The one protocol every predictor follows, its options, and the registry by name.

A predictor is fitted on a history (a :class:`~moetrace.trace.Loads` holding only steps up to
and including the origin) and forecasts, for every layer and expert, the load share at each
of the next H steps. Forecasts are non-negative and sum to 1 over experts. The backtest engine
calls ``fit`` on the same object for successive, increasing origins, so a predictor may reuse
work from an earlier fit (for example ARIMA parameters) as long as it only uses the history it
is given.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from moetrace.errors import MissingExtraError, ParameterError
from moetrace.progress import Progress
from moetrace.trace.shares import Loads


@dataclass(frozen=True)
class PredictorOptions:
    """The hyperparameters a user sets, shared by all predictors; each reads the ones that
    apply to it. Data a predictor learns from (a separate training trace) and a progress
    callback are not options: :func:`make_predictor` takes them."""

    window: int | None = None  # the sw_avg window in steps (None: the predictor's default)
    bucket: int | None = None  # steps per bucket (None: the predictor's default)
    order: tuple[int, int, int] | None = None  # ARIMA (p, d, q); None: chosen automatically
    seed: int = 0
    #: the horizons (training steps) the forecast will be scored or used at: predictors that
    #: tune themselves or state their own uncertainty (drift, auto) do so for these
    horizons: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Uncertainty:
    """What a forecast at one horizon is worth, from the history's own past errors: bounds of
    every expert's mean share over the horizon (holding it with probability ``level``) and
    each layer's expected per-step error rate."""

    horizon: int  # training steps
    lower: np.ndarray  # (L, E)
    upper: np.ndarray  # (L, E)
    expected_error: np.ndarray  # (L,)
    level: float


class Predictor(Protocol):
    """Fit on history, forecast shares of the next ``horizon`` steps.

    ``fallback`` says, after a fit, why the predictor forecast with a simpler rule than its
    own (for example an LSTM with too little history to train on), or None; reports show it.
    """

    name: str
    fallback: str | None

    def fit(self, history: Loads) -> "Predictor":
        """Fit on ``history`` (every step of it is at or before the origin)."""
        ...

    def forecast(self, horizon: int) -> np.ndarray:
        """Shares for steps origin+1 .. origin+horizon, shape (layers, horizon, experts)."""
        ...

    def uncertainty(self, horizon: int) -> Uncertainty | None:
        """The predictor's own calibration at ``horizon`` (one of ``options.horizons``), or
        None if it makes none (moetrace.calibrate then makes one for it, by backtesting it on the history)."""
        ...


#: name -> factory ``(options, *, train, progress) -> Predictor``; filled by
#: moetrace.predictors (explicit, no scans).
REGISTRY: dict[str, Callable[..., Predictor]] = {}
#: name -> (module it needs, the extra that installs it), for predictors with an optional part
NEEDS: dict[str, tuple[str, str]] = {}


def register(name: str, factory: Callable[..., Predictor], *,
             needs: tuple[str, str] | None = None) -> None:
    REGISTRY[name] = factory
    if needs is not None:
        NEEDS[name] = needs


def missing_extra(name: str) -> str | None:
    """Why predictor ``name`` cannot run here (its optional dependency is not installed), or
    None. Checked without importing the dependency."""
    if name not in NEEDS:
        return None
    module, extra = NEEDS[name]
    import importlib.util
    import sys

    if module in sys.modules and sys.modules[module] is None:  # import blocked
        return f"{module} is not installed (pip install 'moetrace[{extra}]')"
    if module in sys.modules or importlib.util.find_spec(module) is not None:
        return None
    return f"{module} is not installed (pip install 'moetrace[{extra}]')"


def make_predictor(name: str, options: PredictorOptions | None = None, *,
                   train: Loads | None = None, progress: Progress | None = None) -> Predictor:
    """A new, unfitted predictor by registered name. ``train``: a separate trace a learning
    predictor (lstm) trains on instead of the history; ``progress`` is told about long fits."""
    if name not in REGISTRY:
        raise ParameterError(f"unknown predictor '{name}' (known: {', '.join(sorted(REGISTRY))})")
    return REGISTRY[name](options or PredictorOptions(), train=train, progress=progress)


@dataclass(frozen=True)
class Selection:
    """Predictors chosen for a run, and those a default or "all" set left out (with why)."""

    names: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...] = ()  # (name, reason)


def select_predictors(spec: str | Sequence[str] | None,
                      default: Sequence[str]) -> Selection:
    """Resolve a predictor list the same way for every command.

    ``None`` means ``default``; ``"all"`` every registered predictor; otherwise names
    (a comma-separated string or a sequence). A default or "all" set skips predictors whose
    optional dependency is missing (reported in ``skipped``); a predictor asked for by name
    that cannot run is an error naming the extra to install.
    """
    if spec is None:
        names, implicit = list(default), True
    else:
        names = [n.strip() for n in spec.split(",")] if isinstance(spec, str) else list(spec)
        names = [n for n in names if n]
        if not names:
            raise ParameterError("no predictor given (names, a comma-separated list, or all)")
        implicit = names == ["all"]
        if implicit:
            names = list(REGISTRY)
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        raise ParameterError(f"unknown predictor '{unknown[0]}' (known: "
                             f"{', '.join(REGISTRY)}, all)")
    chosen, skipped = [], []
    for name in dict.fromkeys(names):
        reason = missing_extra(name)
        if reason is None:
            chosen.append(name)
        elif implicit:
            skipped.append((name, reason))
        else:
            module, extra = NEEDS[name]
            raise MissingExtraError(module, extra, f"the {name} predictor")
    if not chosen:
        raise ParameterError("none of the predictors can run here: " +
                             "; ".join(f"{n}: {r}" for n, r in skipped))
    return Selection(tuple(chosen), tuple(skipped))
