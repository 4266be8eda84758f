"""One plan: where to put every expert for the next re-plan interval after a step.

:func:`plan_trace` takes an estimate of the loads of the ``interval`` steps after ``at`` (from
a window, a forecast, or, for evaluation, the actual steps: moetrace.placement.estimates),
plans them on a :class:`Cluster`, and says what the plan is expected to buy: its balancedness
under the estimate, against the static placement's. :meth:`PlacementPlan.document` is the
JSON written by ``moetrace plan`` (moetrace.placement.document); :meth:`PlacementPlan.sglang`
the file SGLang's ``--init-expert-location`` reads.
"""

from __future__ import annotations

from moetrace.defaults import LOAD_WINDOW, REPLAN_INTERVAL
from moetrace.errors import ParameterError
from moetrace.placement.cluster import Cluster, expected_balancedness
from moetrace.placement.document import SCHEMA, SCHEMA_VERSION, PlacementPlan
from moetrace.placement.estimates import SOURCES, Estimates, canonical, sample_blocks
from moetrace.trace.shares import Loads

__all__ = ["SCHEMA", "SCHEMA_VERSION", "SOURCES", "PlacementPlan", "plan_trace"]


def plan_trace(loads: Loads, cluster: Cluster, *, source: str = "forecast",
               predictor: str = "auto", at: int | None = None,
               interval: int = REPLAN_INTERVAL, window: int = LOAD_WINDOW,
               source_layers: list[int] | None = None) -> PlacementPlan:
    """The plan for the ``interval`` (re-plan interval) steps after ``at`` (default: the
    trace's last step) from the ``source`` estimate; ``window`` is the load window of the
    window estimate. A forecast that cannot be made falls back to the window of the last
    interval, and the plan's ``fallback`` says so (moetrace.placement.estimates)."""
    if interval < 1 or window < 1:
        raise ParameterError("--replan-interval and --load-window must be positive numbers of "
                             "steps")
    cluster.slots(loads.n_experts)  # a cluster that does not fit fails before any fit
    first, last = int(loads.steps[0]), int(loads.steps[-1])
    at = last if at is None else int(at)
    if at < first:
        raise ParameterError(f"--at {at:,} is before the trace's first step ({first:,})")
    source = canonical(source)
    if source not in SOURCES:
        raise ParameterError(f"--estimate takes {', '.join(SOURCES)}, got '{source}'")
    after = loads.rows(at, at + interval)
    if source == "hindsight" and after.stop <= after.start:
        raise ParameterError(f"--estimate hindsight needs the steps after {at:,}; the trace "
                             f"ends at {last:,} (give --at earlier)")
    estimates = Estimates(loads, interval)
    shares = estimates.estimate(source, at, window=window, predictor=predictor)
    samples = estimates.samples(source, at, window=window, predictor=predictor)
    layout = cluster.layout(shares, samples=samples, blocks=sample_blocks(source))
    static = cluster.static(loads.n_layers, loads.n_experts)
    return PlacementPlan.of(
        layout, at=at, interval=interval, source=source,
        predictor=predictor if source == "forecast" else None, cluster=cluster,
        layers=list(loads.layers), shares=shares,
        expected=expected_balancedness(shares, layout.replicas),
        expected_static=expected_balancedness(shares, static), source_layers=source_layers,
        fallback=estimates.fallback(at, predictor) if source == "forecast" else None)
