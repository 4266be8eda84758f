"""The common skeleton of every predictor: validate, bucket, forecast buckets once, expand.

Subclasses implement ``_fit(buckets)`` on the (L, n, E) bucket means of the history and
``_forecast_buckets(k)`` for the next k buckets. Public ``fit``/``forecast`` check their inputs
once; the longest bucket forecast is cached, so forecast(1000) after forecast(2000) (or the
reverse) from the same fit costs nothing: a predictor that forecasts recursively makes a
shorter forecast as a prefix of a longer one.

A predictor that tunes itself for the horizons it is asked for (``options.horizons``: auto's
combination of rules, drift's rule, each chosen by how it did at that horizon on the
history's past) says so with ``tuned = True``: its forecast for h steps is then made with the
tuning for the shortest asked horizon of at least h (:meth:`BucketPredictor.tuning`), one
cached path per tuning, and is not a prefix of its forecast for a longer horizon.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from moetrace.defaults import HORIZON
from moetrace.errors import ParameterError
from moetrace.predictors.base import PredictorOptions
from moetrace.progress import Progress
from moetrace.predictors.buckets import (
    bucket_means,
    effective_bucket,
    expand_buckets,
    n_buckets,
    normalize_shares,
)
from moetrace.trace.shares import Loads


@dataclass(frozen=True)
class HistoryMark:
    """Where a fitted history ended, to recognise a later history of the same trace."""

    layers: tuple[int, ...]
    n_experts: int
    n_steps: int
    last_step: int
    last_counts: np.ndarray  # (L, E) counts at the last step

    @classmethod
    def of(cls, history: Loads) -> "HistoryMark":
        last = history.n_steps - 1
        return cls(history.layers, history.n_experts, history.n_steps,
                   int(history.steps[last]), history.counts[:, last].copy())

    def growth(self, history: Loads) -> int | None:
        """Steps by which ``history`` extends the marked one (same layers, same step and counts
        where it ended); None if it does not extend it (shorter, or another trace)."""
        if (history.layers != self.layers or history.n_experts != self.n_experts
                or history.n_steps < self.n_steps):
            return None
        at = self.n_steps - 1
        if int(history.steps[at]) != self.last_step or not np.array_equal(
                history.counts[:, at], self.last_counts):
            return None
        return history.n_steps - self.n_steps

    def still_fresh(self, history: Loads, max_growth: int) -> bool:
        """Whether work fitted on the marked history may serve ``history``: it extends it by
        fewer steps than the marked history had (so refits double the history at most) and
        fewer than ``max_growth``."""
        grown = self.growth(history)
        return grown is not None and grown < min(max_growth, self.n_steps)


class BucketPredictor:
    """Fit on bucket means of the history, forecast bucket means, expand back to steps."""

    name = "?"
    default_bucket = 1
    #: whether a fit may build on the fits before it (a refit schedule, as arima's and the
    #: lstm's), so that a fresh object at a later origin could forecast otherwise; a report's
    #: backtest runs a predictor's origins as separate tasks only where this is False
    #: (moetrace.pipeline): a predictor says False only if its fit is a function of the
    #: history alone
    stateful = True
    min_buckets = 1  # fewest complete buckets of history the predictor can work with
    #: whether the fit tunes itself for each of ``options.horizons`` (see the module doc)
    tuned = False

    def __init__(self, options: PredictorOptions | None = None, *, train: Loads | None = None,
                 progress: Progress | None = None):
        self.options = options or PredictorOptions()
        self.train = train  # a separate trace to learn from (only learning predictors use it)
        self.progress = progress
        self.bucket = self.default_bucket if self.options.bucket is None else self.options.bucket
        if self.bucket <= 0:
            raise ParameterError(f"{self.name}: bucket must be a positive number of steps, "
                                 f"got {self.bucket}")
        self.origin: int | None = None
        #: why the last fit fell back to a simpler forecast (None: it did not); see Predictor
        self.fallback: str | None = None
        self.step_bucket = self.bucket
        self._cache: dict[int, np.ndarray] = {}  # tuning (buckets) -> its path forecast

    def fit(self, history: Loads) -> "BucketPredictor":
        """Fit on ``history``; every step of it is at or before the origin (its last step).

        Buckets are ``bucket`` training steps, rounded up to whole sampling intervals of the
        history (``self.step_bucket``), so the model sees the same time scale whether the
        trace holds every step or every k-th."""
        self.step_bucket = effective_bucket(self.bucket, history.interval)
        history.require(self.min_buckets * self.step_bucket,
                        f"{self.name} ({self.min_buckets} bucket(s) of {self.step_bucket} steps)")
        self._fit(bucket_means(history, self.step_bucket), history)
        self.origin = int(history.steps[-1])
        self._cache = {}
        return self

    def buckets_in(self, steps: int) -> int:
        """Buckets (of the fitted ``step_bucket``) that ``steps`` training steps hold (>= 1)."""
        return max(1, steps // self.step_bucket)

    def forecast(self, horizon: int) -> np.ndarray:
        """Shares for steps origin+1 .. origin+horizon, shape (layers, horizon, experts)."""
        if self.origin is None:
            raise ParameterError(f"{self.name}: call fit(history) before forecast()")
        if int(horizon) != horizon or horizon <= 0:
            raise ParameterError(f"{self.name}: horizon must be a positive number of steps, "
                                 f"got {horizon}")
        k = n_buckets(int(horizon), self.step_bucket)
        key = self.tuning(k)
        path = self._cache.get(key)
        if path is None or path.shape[1] < k:
            path = self._cache[key] = normalize_shares(self._forecast_buckets(k))
        return expand_buckets(path[:, :k], self.step_bucket, int(horizon))

    def tunings(self) -> list[int]:
        """The horizons a ``tuned`` predictor tunes itself for, in buckets, shortest first:
        ``options.horizons`` (default: ``predict``'s default horizon)."""
        horizons = self.options.horizons or (HORIZON,)
        return sorted({n_buckets(int(h), self.step_bucket) for h in horizons})

    def tuning(self, k: int) -> int:
        """The tuning a forecast of ``k`` buckets is made with: the shortest of
        :meth:`tunings` of at least k buckets (the longest if none is); 0 for a predictor
        that is not ``tuned`` (one tuning for every horizon)."""
        if not self.tuned:
            return 0
        ks = self.tunings()
        return next((t for t in ks if t >= k), ks[-1])

    def uncertainty(self, horizon: int):
        """None: this predictor makes no calibration of its own (see Predictor)."""
        return None

    def _fit(self, buckets: np.ndarray, history: Loads) -> None:
        raise NotImplementedError

    def _forecast_buckets(self, k: int) -> np.ndarray:
        raise NotImplementedError

    def _report(self, task: str, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(done, total, task)
