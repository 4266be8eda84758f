"""The load estimates every placement is planned from: one set, in one unit, cached by step.

A plan made at training step t is held for the re-plan interval R after it, so it wants the
expert loads of the steps in (t, t + R]. ``plan``, the replay's policies and ``watch`` all
take them from :class:`Estimates`, as shares ``[L, E]`` (each layer's row sums to 1; the
planner compares loads within a layer only):

- :meth:`Estimates.window`: the token counts of the load window before t, the steps in
  (t - window, t], summed and taken as shares (vLLM's EPLB: a window of 1,000 steps). A layer
  with no tokens in the window gets equal shares.
- :meth:`Estimates.forecast`: a predictor's mean forecast share over (t, t + R], fitted on
  the steps up to t. **The one fallback rule**: where the predictor cannot forecast (it raises
  a ParameterError, for example with too little history), the window estimate of the last
  re-plan interval, the counts of (t - R, t], stands in; :meth:`Estimates.fallback` says why
  and :attr:`Estimates.notes` holds one line per such step. A predictor that forecasts with a
  simpler rule of its own (``Predictor.fallback``) is used as it forecasts, and
  :meth:`Estimates.fallback` says that too.
- :meth:`Estimates.hindsight`: the actual mean share over (t, t + R]: evaluation only, the
  *hindsight plan*'s loads. It is a reference, not a bound: a plan held for the interval is
  judged step by step, and a plan made for the mean of those steps can be beaten by another
  plan (``oracle``, its name in 0.2, is accepted until 0.4).

Each estimate also has its **samples** (:meth:`Estimates.samples`), the per-step loads the
plan is expected to meet over the interval: the planner plans for the interval as it will
be, step by step, not for its mean (moetrace.placement.rebalance). The window's samples are
the window's own steps; the hindsight's the interval's actual steps; the forecast's two
scenarios of the last re-plan interval's steps, one after the other (:data:`SCENARIOS`): the
forecast plus each step's deviation from their mean (the step-to-step variation the recent
history shows, carried onto the forecast), then the steps as they were (the forecast's level
may be wrong). :func:`sample_blocks` says in how many blocks of them a plan must beat EPLB's:
in every block of each scenario, so a plan from a forecast replaces EPLB's only where it
wins whether the forecast's level holds or the loads stay where they were.

Steps become rows through :class:`~moetrace.trace.shares.Loads` alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from moetrace.defaults import LOAD_WINDOW, REPLAN_INTERVAL
from moetrace.errors import ParameterError
from moetrace.placement.rebalance import BLOCKS
from moetrace.trace.shares import Loads, load_shares

if TYPE_CHECKING:
    from moetrace.predictors.base import Uncertainty

#: the estimates by name (``plan --estimate``)
SOURCES = ("forecast", "window", "hindsight")
#: former names of estimates and policies, accepted for one release (0.2) with a note
RENAMED = {"oracle": "hindsight"}
#: scenarios each estimate's samples hold, one after the other, each as many steps long.
#: With the forecast's level alone (one scenario) the forecast policy fell below EPLB's
#: planner on 14, 12 and 24 of three sets of 200 random simulated traces (by up to 0.55
#: points); with the recent steps as a second scenario, on 0, 1 and 2 (by up to 0.02 points),
#: and on 12 of 2,000 draws (by up to 0.63 points; docs/placement.md, "What is guaranteed")
SCENARIOS = {"forecast": 2, "window": 1, "hindsight": 1}


def sample_blocks(source: str) -> int:
    """In how many consecutive blocks of :meth:`Estimates.samples` of ``source`` a plan must
    beat EPLB's plan of the same loads (moetrace.placement.rebalance): 1 for the hindsight's
    (the very steps the plan is held for), :data:`~moetrace.placement.rebalance.BLOCKS` in
    each scenario for the others."""
    source = canonical(source)
    return 1 if source == "hindsight" else BLOCKS * SCENARIOS[source]


def canonical(name: str) -> str:
    """An estimate's or a policy's name under its current spelling (``oracle``:
    ``hindsight``)."""
    head, sep, tail = name.partition(":")
    return RENAMED.get(head, head) + sep + tail


@dataclass(frozen=True)
class ForecastEstimate:
    """One forecast estimate: shares [L, E], why it is not the predictor's own forecast (or
    None), and the predictor's stated uncertainty at the re-plan interval (or None)."""

    shares: np.ndarray
    fallback: str | None
    uncertainty: Uncertainty | None


@dataclass
class Estimates:
    """The load estimates of ``loads`` at any of its steps, for plans held ``replan_interval``
    training steps; each is computed once per step (and window or predictor)."""

    loads: Loads
    replan_interval: int = REPLAN_INTERVAL
    #: called with a line before each forecast fit (they are the slow part)
    progress: Callable[[str], None] | None = None
    #: one line per forecast that fell back to the window (see the module docstring)
    notes: list[str] = field(default_factory=list)
    _cache: dict = field(default_factory=dict, repr=False)
    #: predictor name -> the object refitted at each step, for a predictor whose fit is a
    #: function of the history alone (``stateful`` False: auto's online detector is then fed
    #: only the steps since its last fit, not the whole history at every re-plan)
    _models: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.replan_interval < 1:
            raise ParameterError("the re-plan interval must be a positive number of steps")

    def window(self, t: int, window: int = LOAD_WINDOW) -> np.ndarray:
        """``[L, E]`` shares of the token counts of the steps in (t - window, t]."""
        key = ("window", int(t), int(window))
        if key not in self._cache:
            counts = self.loads.between(t - window, t).counts.sum(axis=1, dtype=np.float64)
            self._cache[key] = _shares(counts)
        return self._cache[key]

    def hindsight(self, t: int) -> np.ndarray:
        """``[L, E]`` the actual mean share over the steps in (t, t + re-plan interval]."""
        key = ("hindsight", int(t))
        if key not in self._cache:
            self._cache[key] = load_shares(self._after(t).counts).mean(axis=1)
        return self._cache[key]

    #: the former name of :meth:`hindsight` (0.2; accepted until 0.4)
    oracle = hindsight

    def _after(self, t: int) -> Loads:
        after = self.loads.between(t, t + self.replan_interval)
        if after.n_steps == 0:
            end = int(self.loads.steps[-1]) if self.loads.n_steps else None
            raise ParameterError(f"the hindsight estimate needs the steps after {t:,}; "
                                 f"the trace has none up to step "
                                 f"{t + self.replan_interval:,}"
                                 + ("" if end is None else f" (it ends at {end:,})"))
        return after

    def samples(self, source: str, t: int, *, window: int = LOAD_WINDOW,
                predictor: str = "auto") -> np.ndarray:
        """``[L, S, E]``: the per-step loads the plan from estimate ``source`` at ``t`` is
        expected to meet (see the module docstring; counts or shares: the planner compares
        GPUs within a step only)."""
        source = canonical(source)
        if source == "window":
            return self.loads.between(t - window, t).counts
        if source == "hindsight":
            return self._after(t).counts
        if source == "forecast":
            recent = self.loads.between(t - self.replan_interval, t).shares
            if recent.shape[1] == 0:
                return self.forecast(t, predictor)[:, None, :]
            deviation = recent - recent.mean(axis=1, keepdims=True)
            level = np.maximum(self.forecast(t, predictor)[:, None, :] + deviation, 0)
            return np.concatenate([level, recent], axis=1).astype(np.float32)
        raise ParameterError(f"unknown load estimate '{source}' (known: {', '.join(SOURCES)})")

    def forecast(self, t: int, predictor: str = "auto") -> np.ndarray:
        """``[L, E]`` a predictor's mean forecast share over the next re-plan interval, fitted
        on the steps up to ``t``; the window of the last interval where it cannot forecast."""
        return self.forecast_fit(t, predictor).shares

    def fallback(self, t: int, predictor: str = "auto") -> str | None:
        """Why the forecast at ``t`` is not the predictor's own (None: it is)."""
        return self.forecast_fit(t, predictor).fallback

    def forecast_fit(self, t: int, predictor: str = "auto") -> ForecastEstimate:
        """The forecast at ``t``, its fallback and uncertainty (:class:`ForecastEstimate`)."""
        key = ("forecast", predictor, int(t))
        if key not in self._cache:
            self._cache[key] = self._forecast(int(t), predictor)
        return self._cache[key]

    def estimate(self, source: str, t: int, *, window: int = LOAD_WINDOW,
                 predictor: str = "auto") -> np.ndarray:
        """The estimate named ``source`` (one of :data:`SOURCES`) at ``t``."""
        source = canonical(source)
        if source == "window":
            return self.window(t, window)
        if source == "forecast":
            return self.forecast(t, predictor)
        if source == "hindsight":
            return self.hindsight(t)
        raise ParameterError(f"unknown load estimate '{source}' (known: {', '.join(SOURCES)})")

    def _forecast(self, t: int, predictor: str) -> ForecastEstimate:
        from moetrace.predictors import PredictorOptions, make_predictor

        if self.progress is not None:
            self.progress(f"{predictor} @ step {t}")
        horizon = self.replan_interval
        model = self._models.get(predictor) or make_predictor(
            predictor, PredictorOptions(horizons=(horizon,)))
        if not getattr(model, "stateful", True):
            self._models[predictor] = model
        try:
            shares = model.fit(self.loads.upto(t)).forecast(horizon).mean(axis=1)
        except ParameterError as exc:
            why = (f"could not forecast at step {t} ({exc}); the last {horizon} steps' counts "
                   "stood in")
            self.notes.append(f"{predictor} {why}")
            return ForecastEstimate(self.window(t, horizon), why, None)
        return ForecastEstimate(np.asarray(shares, dtype=np.float64), model.fallback,
                        model.uncertainty(horizon))


def _shares(counts: np.ndarray) -> np.ndarray:
    """Rows of ``counts [L, E]`` as shares; a row without tokens as equal shares."""
    total = counts.sum(axis=1, keepdims=True)
    equal = np.full_like(counts, 1.0 / max(counts.shape[1], 1))
    return np.where(total > 0, counts / np.where(total > 0, total, 1.0), equal)
