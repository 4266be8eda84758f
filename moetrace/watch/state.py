"""What a watch knows about the running job, updated a block of merged steps at a time.

:class:`WatchState` holds, with memory bounded over a run of any length:

- per layer the online state detector (moetrace/states/online.py, streaming: the same object
  `analyze` runs over a finished trace, so the two agree);
- the last ``history`` training steps of counts (a ring), enough for ``auto`` to forecast
  the next interval;
- the latest forecast (moetrace.placement.estimates, as ``plan`` and the replay make it): per
  layer the expected error rate and the mean width of the 80% intervals of the experts'
  shares;
- with a cluster: the plan in force (static until the first re-plan) and, every quarter
  interval, the adaptive policy's own rule (:meth:`moetrace.placement.policies.Adaptive.rule`,
  docs/placement.md): a transient layer is re-planned from its last quarter interval of
  counts; a stable layer, on the interval grid, when the forecast says a fresh plan gains more
  than ``threshold``. Each new plan is a :class:`~moetrace.placement.document.PlacementPlan`
  with the planner's own arrays, written by the one plan document writer.

:meth:`snapshot` is the plain-data view that the live display and ``--json`` render.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from moetrace.defaults import REPLAN_GAIN, REPLAN_INTERVAL, STATE_WINDOW
from moetrace.errors import ParameterError
from moetrace.metrics import nanmean_rows
from moetrace.placement.cluster import Cluster, Layout, expected_balancedness, moved_replicas
from moetrace.placement.document import PlacementPlan, stack_log2phy
from moetrace.placement.estimates import Estimates, ForecastEstimate
from moetrace.placement.policies import Adaptive, forecast_balancedness, on_grid
from moetrace.states.online import OnlineDetector
from moetrace.trace.shares import Loads, sampling_interval


@dataclass
class PlanSettings:
    """The cluster watch plans for and the adaptive rule's settings."""

    cluster: Cluster
    replan_interval: int = REPLAN_INTERVAL  # training steps a plan is held / forecast
    threshold: float = REPLAN_GAIN  # the adaptive rule's tolerance
    predictor: str = "auto"

    def __post_init__(self) -> None:
        if self.replan_interval < 1 or not math.isfinite(self.threshold):
            raise ParameterError("--replan-interval must be a positive number of steps and "
                                 "--threshold a finite number")

    @property
    def policy(self) -> Adaptive:
        """The adaptive policy whose rule watch applies."""
        return Adaptive(predictor=self.predictor, tolerance=self.threshold)


@dataclass
class WatchState:
    n_layers: int
    n_experts: int
    top_k: int = 1
    window: int = STATE_WINDOW  # the state window of the online detector
    history: int = 4 * REPLAN_INTERVAL  # training steps of counts kept (at least 4 horizons)
    forecast_every: int | None = None  # steps between forecasts (default: a quarter horizon)
    horizon: int = REPLAN_INTERVAL  # the re-plan interval: steps a forecast and a plan cover
    plan: PlanSettings | None = None
    interval: int | None = None  # sampling interval, learnt from the first steps
    detector: OnlineDetector | None = None
    steps: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    counts: np.ndarray | None = None  # (L, kept, E): the ring, oldest first
    last_step: int | None = None
    stable: np.ndarray | None = None  # (L,) believed now
    imbalance: np.ndarray | None = None  # (L,) max/mean of the last step
    expected_error: np.ndarray | None = None
    interval_width: np.ndarray | None = None
    forecast_at: int | None = None
    plan_start: int | None = None  # the first plan check: the origin of the re-plan grid
    current: np.ndarray | None = None  # replicas (L, E, G) in force
    layout: Layout | None = None  # ... as the planner's arrays (after the first re-plan)
    planned_from: np.ndarray | None = None  # (L, E) the estimate each layer was planned from
    plan_balance: np.ndarray | None = None  # (L,) forecast balancedness of the plan in force
    fresh_balance: np.ndarray | None = None  # (L,) ... of a fresh plan
    plan_version: int = 0
    last_replan: int | None = None
    replicas_moved: int = 0
    steps_seen: int = 0
    pending_plan: PlacementPlan | None = None  # the plan to write, set by a re-plan

    def update(self, steps: np.ndarray, counts: np.ndarray) -> list[dict[str, Any]]:
        """Take merged steps (n,) and counts (L, n, E); return the events they caused."""
        events: list[dict[str, Any]] = []
        if len(steps) == 0:
            return events
        if self.detector is None:
            self.interval = sampling_interval(steps) if len(steps) > 1 else 1
            rule = self.plan.policy if self.plan is not None else Adaptive()
            self.forecast_every = self.forecast_every or rule.quarter(self.horizon,
                                                                      self.interval)
            self.history = max(self.history, 4 * self.horizon)
            self.detector = OnlineDetector(self.n_layers, self.n_experts, window=self.window,
                                           top_k=self.top_k, interval=self.interval)
            self.stable = np.zeros(self.n_layers, dtype=bool)
            if self.plan is not None:
                self.current = self.plan.cluster.static(self.n_layers, self.n_experts)
        before = self.stable.copy()
        labels = self.detector.update(steps, counts)
        self.stable = labels[:, -1].copy()
        for layer in np.flatnonzero(before != self.stable):
            state = self.detector.layers[layer]
            events.append({"event": "stable" if self.stable[layer] else "transient",
                           "layer": int(layer), "at": state.called_at, "onset": state.onset})
        last = counts[:, -1].astype(np.float64)
        self.imbalance = last.max(axis=1) / np.maximum(last.mean(axis=1), 1e-300)
        self._remember(steps, counts)
        self.last_step = int(steps[-1])
        self.steps_seen += len(steps)
        due = self.forecast_at is None or self.last_step - self.forecast_at >= self.forecast_every
        if due and self._history_span() >= self.horizon:
            events += self._forecast()
        return events

    def _remember(self, steps, counts) -> None:
        """Keep the rows of the last ``history`` training steps."""
        if self.counts is not None:
            steps = np.concatenate([self.steps, steps])
            counts = np.concatenate([self.counts, counts], axis=1)
        kept = self._ring(steps, counts).last(self.history)
        self.steps, self.counts = kept.steps.copy(), kept.counts.copy()

    def _ring(self, steps=None, counts=None) -> Loads:
        steps = self.steps if steps is None else steps
        counts = self.counts if counts is None else counts
        return Loads(steps, counts, tuple(range(self.n_layers)))

    def _history_span(self) -> int:
        return Loads.axis(self.steps).span

    def _forecast(self) -> list[dict[str, Any]]:
        previous, t = self.forecast_at, self.last_step
        self.forecast_at = t
        estimates = Estimates(self._ring(), self.horizon)
        fit = estimates.forecast_fit(t, self.plan.predictor if self.plan is not None else "auto")
        if fit.uncertainty is not None:
            self.expected_error = np.asarray(fit.uncertainty.expected_error, dtype=np.float64)
            self.interval_width = nanmean_rows(fit.uncertainty.upper - fit.uncertainty.lower)
        if self.plan is None:
            return []
        return self._check_plan(estimates, fit, t, previous)

    def _check_plan(self, estimates: Estimates, fit: ForecastEstimate, t: int,
                    previous: int | None) -> list[dict[str, Any]]:
        """The adaptive policy's rule at step ``t`` (the previous check was at ``previous``)."""
        cluster = self.plan.cluster
        first = self.plan_version == 0
        if first:
            self.plan_start = t
        decision = self.plan.policy.rule(
            estimates, t, self.current, self.stable, cluster, first=first,
            on_grid=not first and on_grid(t, previous, self.plan_start, self.horizon))
        if decision.in_force is not None:
            in_force, self.fresh_balance = decision.in_force, decision.fresh
        else:  # the view shows both every quarter interval
            in_force, self.fresh_balance = forecast_balancedness(
                fit.shares, self.current, cluster,
                estimates.samples("forecast", t, predictor=self.plan.predictor))
        which = decision.replan
        self.plan_balance = in_force
        if not which.any():
            return []
        made = cluster.layout(decision.shares[which], self.current[which],
                              None if decision.samples is None else decision.samples[which],
                              decision.blocks)
        moved = int(moved_replicas(self.current[which], made.replicas).sum())
        self._apply(which, made, decision.shares)
        self.plan_balance = expected_balancedness(fit.shares, self.current)
        self.plan_version += 1
        self.last_replan = t
        self.replicas_moved += moved
        self.pending_plan = self._placement_plan(fit)
        gain = self.fresh_balance - in_force
        return [{"event": "replan", "at": t, "version": self.plan_version,
                 "layers": [int(x) for x in np.flatnonzero(which)],
                 "gain": [None if decision.transient[x] else round(float(gain[x]), 6)
                          for x in np.flatnonzero(which)],
                 "replicas_moved": moved}]

    def _apply(self, which: np.ndarray, made: Layout, shares: np.ndarray) -> None:
        """Put the new plan of layers ``which`` in force, in both forms."""
        self.current = self.current.copy()
        self.current[which] = made.replicas
        if self.layout is None:  # the first plan covers every layer (Adaptive.rule, first)
            self.layout, self.planned_from = made, shares.copy()
            return
        both = stack_log2phy([self.layout.log2phy, made.log2phy])  # padded alike
        log2phy = both[:self.n_layers].copy()
        log2phy[which] = both[self.n_layers:]
        phy2log = self.layout.phy2log.copy()
        phy2log[which] = made.phy2log
        logcnt = self.layout.logcnt.copy()
        logcnt[which] = made.logcnt
        self.layout = Layout(phy2log, log2phy, logcnt, self.current)
        self.planned_from[which] = shares[which]

    def _placement_plan(self, fit: ForecastEstimate) -> PlacementPlan:
        """The plan in force as a plan document's plan (docs/placement.md)."""
        cluster, shares = self.plan.cluster, self.planned_from.copy()
        return PlacementPlan.of(
            self.layout, at=self.last_step, interval=self.horizon, source="adaptive",
            predictor=self.plan.predictor, cluster=cluster, layers=list(range(self.n_layers)),
            shares=shares, expected=expected_balancedness(shares, self.current),
            expected_static=expected_balancedness(
                shares, cluster.static(self.n_layers, self.n_experts)),
            fallback=fit.fallback)

    def snapshot(self) -> dict[str, Any]:
        """Plain data: the step, and per layer its state and the latest numbers."""
        layers = []
        for i in range(self.n_layers):
            state = self.detector.layers[i] if self.detector else None
            layers.append({
                "layer": i,
                "state": None if self.stable is None else
                ("stable" if self.stable[i] else "transient"),
                "since": None if state is None else state.onset,
                "confidence": None if state is None else round(float(state.confidence), 3),
                "imbalance": _num(self.imbalance, i),
                "expected_error": _num(self.expected_error, i),
                "interval_width": _num(self.interval_width, i),
                "plan_balancedness": _num(self.plan_balance, i),
                "fresh_balancedness": _num(self.fresh_balance, i),
            })
        return {"step": self.last_step, "steps_seen": self.steps_seen,
                "interval": self.interval, "forecast_at": self.forecast_at,
                "plan_version": self.plan_version if self.plan is not None else None,
                "last_replan": self.last_replan, "replicas_moved": self.replicas_moved,
                "layers": layers}


def _num(values: np.ndarray | None, i: int) -> float | None:
    if values is None or not np.isfinite(values[i]):
        return None
    return round(float(values[i]), 6)

