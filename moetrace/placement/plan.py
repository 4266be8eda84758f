"""One plan: where to put every expert for the next interval after a step.

:func:`plan_trace` estimates the loads of the ``interval`` steps after ``at`` (from a window,
a forecast, or, for evaluation, the actual steps), plans them on a :class:`Cluster`, and says
what the plan is expected to buy: its balancedness under the estimate, against the static
placement's. :meth:`PlacementPlan.document` is the JSON written by ``moetrace plan``;
:meth:`PlacementPlan.sglang` the file SGLang's ``--init-expert-location`` reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from moetrace.errors import ParameterError
from moetrace.placement.cluster import Cluster, balancedness, replica_counts, token_split
from moetrace.placement.rebalance import rebalance_experts
from moetrace.trace.shares import Loads, load_shares

SCHEMA = "moetrace.plan"
SCHEMA_VERSION = 1
SOURCES = ("forecast", "window", "oracle")


@dataclass
class PlacementPlan:
    at: int
    interval: int
    source: str
    predictor: str | None
    cluster: Cluster
    slots: int
    layers: list[int]  # the trace's layer numbers
    source_layers: list[int] | None  # the model's layer numbers, where the trace knows them
    shares: np.ndarray  # (L, E) estimated mean shares over the interval
    phy2log: np.ndarray  # (L, R)
    log2phy: np.ndarray  # (L, E, X)
    logcnt: np.ndarray  # (L, E)
    expected: np.ndarray  # (L,) balancedness of this plan under the estimate
    expected_static: np.ndarray  # (L,) ... of the static placement
    fallback: str | None = None

    @classmethod
    def merge(cls, parts: list["PlacementPlan"]) -> "PlacementPlan":
        """One plan of every layer from plans of chunks of layers (in layer order);
        ``log2phy`` is padded with -1 to the widest chunk's."""
        if len(parts) == 1:
            return parts[0]
        first = parts[0]
        width = max(p.log2phy.shape[2] for p in parts)
        log2phy = np.concatenate([np.pad(p.log2phy, ((0, 0), (0, 0),
                                                     (0, width - p.log2phy.shape[2])),
                                         constant_values=-1) for p in parts])
        join = lambda name: np.concatenate([getattr(p, name) for p in parts])  # noqa: E731
        fallback = next((p.fallback for p in parts if p.fallback), None)
        return cls(first.at, first.interval, first.source, first.predictor, first.cluster,
                   first.slots, [x for p in parts for x in p.layers], first.source_layers,
                   join("shares"), join("phy2log"), log2phy, join("logcnt"),
                   join("expected"), join("expected_static"), fallback)

    def document(self, trace: str) -> dict[str, Any]:
        c = self.cluster
        return {
            "schema": SCHEMA, "version": SCHEMA_VERSION, "trace": trace,
            "at": self.at, "interval": self.interval, "source": self.source,
            "predictor": self.predictor, "fallback": self.fallback,
            "cluster": {"gpus": c.gpus, "nodes": c.nodes, "groups": c.groups,
                        "replicas": self.slots, "rebalance": c.rebalance},
            "layers": self.layers, "source_layers": self.source_layers,
            "phy2log": self.phy2log.tolist(), "log2phy": self.log2phy.tolist(),
            "logcnt": self.logcnt.tolist(), "estimated_shares": self.shares.tolist(),
            "expected": [{"layer": layer, "balancedness": float(b),
                          "static_balancedness": float(s)}
                         for layer, b, s in zip(self.layers, self.expected,
                                                self.expected_static)],
        }

    def sglang(self) -> dict[str, Any]:
        """``{"physical_to_logical_map": [...]}`` for SGLang's ``--init-expert-location``.

        SGLang wants one row per model layer (``init_by_mapping`` in
        python/sglang/srt/eplb/expert_location.py). Rows follow the model's layer numbers
        (``source_layers`` of an imported trace, else the trace's own); a layer the trace does
        not hold (a dense one) gets SGLang's trivial map, slot p -> expert p % E.
        """
        numbers = self.source_layers or self.layers
        n_experts = self.logcnt.shape[1]
        rows = np.tile(np.arange(self.slots) % n_experts, (max(numbers) + 1, 1))
        rows[np.asarray(numbers)] = self.phy2log
        return {"physical_to_logical_map": rows.tolist()}


def estimate_shares(loads: Loads, source: str, at: int, interval: int, *, window: int,
                    predictor: str) -> tuple[np.ndarray, str | None]:
    """(L, E) estimated mean shares of the ``interval`` steps after ``at``, and the reason
    a forecast fell back to something simpler (or None)."""
    steps = loads.steps
    hi = int(np.searchsorted(steps, at, side="right"))
    if source == "window":
        lo = int(np.searchsorted(steps, at - window, side="right"))
        return load_shares(loads.counts[:, lo:hi].sum(axis=1, keepdims=True))[:, 0], None
    if source == "oracle":
        end = int(np.searchsorted(steps, at + interval, side="right"))
        if end <= hi:
            raise ParameterError(f"--from oracle needs the steps after {at:,}; the trace ends "
                                 f"at {int(steps[-1]):,} (give --at earlier)")
        return load_shares(loads.counts[:, hi:end]).mean(axis=1), None
    if source != "forecast":
        raise ParameterError(f"--from takes {', '.join(SOURCES)}, got '{source}'")
    from moetrace.predictors import PredictorOptions, make_predictor

    model = make_predictor(predictor, PredictorOptions(horizons=(interval,)))
    shares = model.fit(loads.upto(at)).forecast(interval).mean(axis=1)
    return np.asarray(shares, dtype=np.float64), model.fallback


def plan_trace(loads: Loads, cluster: Cluster, *, source: str = "forecast",
               predictor: str = "auto", at: int | None = None, interval: int = 1000,
               window: int = 1000, source_layers: list[int] | None = None) -> PlacementPlan:
    """The plan for the ``interval`` steps after ``at`` (default: the trace's last step)."""
    if interval < 1 or window < 1:
        raise ParameterError("--interval and --window must be positive numbers of steps")
    slots = cluster.slots(loads.n_experts)
    steps = loads.steps
    at = int(steps[-1]) if at is None else int(at)
    if at < int(steps[0]):
        raise ParameterError(f"--at {at:,} is before the trace's first step "
                             f"({int(steps[0]):,})")
    shares, fallback = estimate_shares(loads, source, at, interval, window=window,
                                       predictor=predictor)
    phy2log, log2phy, logcnt = rebalance_experts(shares, slots, cluster.groups, cluster.nodes,
                                                 cluster.gpus, policy=cluster.rebalance)
    planned = replica_counts(phy2log, loads.n_experts, cluster.gpus)
    static = cluster.static(loads.n_layers, loads.n_experts)

    def expected(replicas: np.ndarray) -> np.ndarray:
        return balancedness(np.einsum("le,leg->lg", shares.astype(np.float32),
                                      token_split(replicas)))

    return PlacementPlan(at, interval, source, predictor if source == "forecast" else None,
                         cluster, slots, list(loads.layers), source_layers, shares, phy2log,
                         log2phy, logcnt, expected(planned), expected(static), fallback)
