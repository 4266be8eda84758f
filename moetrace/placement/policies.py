"""Placement policies: when to re-plan and from which load estimate, one class each.

A policy answers two questions for the replay (moetrace.placement.replay): at which training
steps it may re-plan (``origins``), and at each of them which layers get a new plan from
which estimated loads (``decide``: weights ``[L, E]`` and a mask of layers, or None to keep
every plan). Every estimate but the oracle's uses only steps up to the re-plan step.

- ``static``: never re-plans; expert e stays on GPU e // (E / G), no replicas.
- ``window``: every ``interval`` steps, the token counts of the last ``window`` steps (vLLM's
  EPLB: window 1000).
- ``forecast``: every ``interval`` steps, a predictor's mean forecast share over the interval.
- ``oracle``: every ``interval`` steps, the actual mean share over the interval (evaluation
  only: the bound for any plan held for an interval).
- ``adaptive``: state-aware. A layer the online detector calls transient at the re-plan step
  is re-planned every quarter interval from its last quarter interval of counts (its load is
  moving; old history misleads); a stable layer is re-planned, at the interval grid only,
  when the forecast says a new plan would raise its balancedness by more than ``tolerance``
  over the current plan's (fewer moves for the same balance).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from moetrace.errors import ParameterError
from moetrace.placement.cluster import balancedness, token_split

if TYPE_CHECKING:
    from moetrace.placement.replay import ReplayContext

#: the adaptive policy re-plans a stable layer when a new plan gains more balancedness
ADAPTIVE_TOLERANCE = 0.02
#: ... and a transient layer this many times per interval
ADAPTIVE_TRANSIENT_SPLITS = 4


class PlacementPolicy(Protocol):
    name: str

    def origins(self, ctx: "ReplayContext") -> np.ndarray:
        """Training steps at which this policy may re-plan (the first is the replay's start)."""
        ...

    def decide(self, ctx: "ReplayContext", t: int, current: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray] | None:
        """(weights [L, E], layers to re-plan [L] bool) at step ``t``, or None: keep all."""
        ...


def _all(ctx: "ReplayContext") -> np.ndarray:
    return np.ones(ctx.loads.n_layers, dtype=bool)


@dataclass
class Static:
    name: str = "static"

    def origins(self, ctx):
        return ctx.grid[:1]

    def decide(self, ctx, t, current):
        return None


@dataclass
class Window:
    window: int = 1000
    name: str = "window"

    def origins(self, ctx):
        return ctx.grid

    def decide(self, ctx, t, current):
        return ctx.window_weights(t, self.window), _all(ctx)


@dataclass
class Forecast:
    predictor: str = "auto"
    name: str = "forecast"

    def origins(self, ctx):
        return ctx.grid

    def decide(self, ctx, t, current):
        return ctx.forecast_weights(t, self.predictor), _all(ctx)


@dataclass
class Oracle:
    name: str = "oracle"

    def origins(self, ctx):
        return ctx.grid

    def decide(self, ctx, t, current):
        return ctx.actual_weights(t), _all(ctx)


@dataclass
class Adaptive:
    predictor: str = "auto"
    tolerance: float = ADAPTIVE_TOLERANCE
    splits: int = ADAPTIVE_TRANSIENT_SPLITS
    name: str = "adaptive"

    def origins(self, ctx):
        step = max(ctx.interval // self.splits, ctx.loads.interval)
        return np.arange(ctx.grid[0], ctx.last, step, dtype=np.int64)

    def decide(self, ctx, t, current):
        stable = ctx.online_stable_at(t)
        on_grid = (t - ctx.grid[0]) % ctx.interval == 0
        first = t == ctx.grid[0]
        transient = ~stable
        weights = np.zeros((ctx.loads.n_layers, ctx.loads.n_experts))
        replan = transient.copy()
        if transient.any():
            short = max(ctx.interval // self.splits, ctx.loads.interval)
            weights[transient] = ctx.window_weights(t, short)[transient]
        if on_grid and stable.any():
            forecast = ctx.forecast_weights(t, self.predictor)
            if first:
                gain = np.full(ctx.loads.n_layers, np.inf)
            else:
                fresh = ctx.cluster.plan(forecast, current)
                gain = (_expected(forecast, fresh, ctx.cluster.gpus)
                        - _expected(forecast, current, ctx.cluster.gpus))
            chosen = stable & (gain > self.tolerance)
            weights[chosen] = forecast[chosen]
            replan |= chosen
        return (weights, replan) if replan.any() else None


def _expected(shares: np.ndarray, replicas: np.ndarray, gpus: int) -> np.ndarray:
    """[L] balancedness of plan ``replicas`` if the loads were ``shares [L, E]``."""
    gpu = np.einsum("le,leg->lg", shares.astype(np.float32), token_split(replicas))
    return balancedness(gpu)


#: policy name -> class; ``make_policy`` builds one with the replay's settings
POLICIES = {"static": Static, "window": Window, "forecast": Forecast, "oracle": Oracle,
            "adaptive": Adaptive}
DEFAULT_POLICIES = ("static", "window", "forecast", "adaptive", "oracle")


def make_policies(names, *, window: int, predictor: str) -> list[PlacementPolicy]:
    """Policies by name; ``forecast:NAME`` picks the predictor of one forecast policy."""
    made: list[PlacementPolicy] = []
    for spec in names:
        name, _, detail = spec.partition(":")
        if name not in POLICIES:
            raise ParameterError(f"unknown placement policy '{spec}' (known: "
                                 f"{', '.join(POLICIES)}; forecast:PREDICTOR for another "
                                 "predictor)")
        if detail and name not in ("forecast", "adaptive"):
            raise ParameterError(f"policy '{name}' takes no predictor ('{spec}')")
        if name == "window":
            made.append(Window(window=window))
        elif name in ("forecast", "adaptive"):
            made.append(POLICIES[name](predictor=detail or predictor, name=spec))
        else:
            made.append(POLICIES[name]())
    if len({p.name for p in made}) != len(made):
        raise ParameterError("each placement policy may be named once")
    return made
