"""What a watch knows about the running job, updated a block of merged steps at a time.

:class:`WatchState` holds, with memory bounded over a run of any length:

- per layer the online state detector (moetrace/states/online.py, streaming: the same object
  `analyze` runs over a finished trace, so the two agree);
- the last ``history`` training steps of counts (a ring), enough for ``auto`` to forecast
  the next interval;
- the latest forecast: per layer the expected error rate and the mean width of the 80%
  intervals of the experts' shares;
- with a cluster: the plan in force (static until the first re-plan), its balancedness
  forecast over the next interval against a fresh plan's, and a re-plan whenever a layer's
  gain is above ``threshold`` (the adaptive policy's rule, docs/placement.md).

:meth:`snapshot` is the plain-data view that the live display and ``--json`` render.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from moetrace.metrics import nanmean_rows
from moetrace.placement.cluster import Cluster, balancedness, moved_replicas, token_split
from moetrace.states.online import OnlineDetector
from moetrace.trace.shares import Loads, sampling_interval

#: a layer is re-planned when a fresh plan's forecast balancedness beats the current by this
REPLAN_GAIN = 0.02


@dataclass
class PlanSettings:
    cluster: Cluster
    interval: int = 1000  # training steps a plan is held / forecast
    threshold: float = REPLAN_GAIN
    predictor: str = "auto"


@dataclass
class WatchState:
    n_layers: int
    n_experts: int
    top_k: int = 1
    window: int = 100
    history: int = 4000  # training steps of counts kept for forecasting
    forecast_every: int | None = None  # steps between forecasts (default: a quarter horizon)
    horizon: int = 1000
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
    current: np.ndarray | None = None  # replicas (L, E, G) in force
    plan_balance: np.ndarray | None = None  # (L,) forecast balancedness of the plan in force
    fresh_balance: np.ndarray | None = None  # (L,) ... of a fresh plan
    plan_version: int = 0
    last_replan: int | None = None
    replicas_moved: int = 0
    steps_seen: int = 0
    pending_plan: dict | None = None  # the plan to write, set by a re-plan

    def update(self, steps: np.ndarray, counts: np.ndarray) -> list[dict[str, Any]]:
        """Take merged steps (n,) and counts (L, n, E); return the events they caused."""
        events: list[dict[str, Any]] = []
        if len(steps) == 0:
            return events
        if self.detector is None:
            self.interval = sampling_interval(steps) if len(steps) > 1 else 1
            self.forecast_every = self.forecast_every or max(self.interval, self.horizon // 4)
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
        keep = max(1, int(self.history // (self.interval or 1)))
        if self.counts is None:
            self.steps, self.counts = steps[-keep:].copy(), counts[:, -keep:].copy()
            return
        self.steps = np.concatenate([self.steps, steps])[-keep:]
        self.counts = np.concatenate([self.counts, counts], axis=1)[:, -keep:]

    def _history_span(self) -> int:
        if len(self.steps) == 0:
            return 0
        return int(self.steps[-1] - self.steps[0]) + (self.interval or 1)

    def _forecast(self) -> list[dict[str, Any]]:
        from moetrace.errors import ParameterError
        from moetrace.predictors import PredictorOptions, make_predictor

        self.forecast_at = self.last_step
        history = Loads(self.steps, self.counts, tuple(range(self.n_layers)))
        name = self.plan.predictor if self.plan is not None else "auto"
        model = make_predictor(name, PredictorOptions(horizons=(self.horizon,)))
        try:
            shares = model.fit(history).forecast(self.horizon).mean(axis=1)
        except ParameterError:
            return []
        uncertainty = model.uncertainty(self.horizon)
        if uncertainty is not None:
            self.expected_error = np.asarray(uncertainty.expected_error, dtype=np.float64)
            self.interval_width = nanmean_rows(uncertainty.upper - uncertainty.lower)
        return self._check_plan(shares) if self.plan is not None else []

    def _check_plan(self, shares: np.ndarray) -> list[dict[str, Any]]:
        cluster = self.plan.cluster
        fresh = cluster.plan(shares, self.current)
        self.plan_balance = _expected(shares, self.current)
        self.fresh_balance = _expected(shares, fresh)
        gain = self.fresh_balance - self.plan_balance
        which = gain > self.plan.threshold
        if not which.any():
            return []
        if self.plan_version == 0:  # the first plan replaces the static placement everywhere
            which[:] = True
        moved = moved_replicas(self.current, fresh)[which]
        self.current = np.where(which[:, None, None], fresh, self.current)
        self.plan_balance = np.where(which, self.fresh_balance, self.plan_balance)
        self.plan_version += 1
        self.last_replan = self.last_step
        self.replicas_moved += int(moved.sum())
        self.pending_plan = self._plan_document(shares)
        return [{"event": "replan", "at": self.last_step, "version": self.plan_version,
                 "layers": [int(x) for x in np.flatnonzero(which)],
                 "gain": [round(float(g), 6) for g in gain[which]],
                 "replicas_moved": int(moved.sum())}]

    def _plan_document(self, shares: np.ndarray) -> dict[str, Any]:
        """The plan in force as EPLB arrays, with its version (read by the training loop)."""
        cluster = self.plan.cluster
        slots = cluster.slots(self.n_experts)
        per_gpu = slots // cluster.gpus
        phy2log = np.full((self.n_layers, slots), -1, dtype=np.int64)
        for layer in range(self.n_layers):  # each GPU's replicas, in expert order, fill its slots
            for g in range(cluster.gpus):
                experts = np.repeat(np.arange(self.n_experts), self.current[layer, :, g])
                phy2log[layer, g * per_gpu:g * per_gpu + len(experts)] = experts
        logcnt = self.current.sum(axis=2)
        return {"schema": "moetrace.plan", "version": 1, "plan_version": self.plan_version,
                "at": self.last_step, "interval": self.plan.interval,
                "cluster": {"gpus": cluster.gpus, "nodes": cluster.nodes,
                            "groups": cluster.groups, "replicas": slots,
                            "rebalance": cluster.rebalance},
                "phy2log": phy2log.tolist(), "logcnt": logcnt.tolist(),
                "estimated_shares": shares.tolist(),
                "expected": [{"layer": i, "balancedness": float(b)}
                             for i, b in enumerate(self.plan_balance)]}

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


def _expected(shares: np.ndarray, replicas: np.ndarray) -> np.ndarray:
    gpu = np.einsum("le,leg->lg", shares.astype(np.float32), token_split(replicas))
    return balancedness(gpu)
