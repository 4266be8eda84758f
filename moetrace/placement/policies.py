"""Placement policies: when to re-plan and from which load estimate, one class each.

A policy answers two questions for the replay (moetrace.placement.replay): at which training
steps it may re-plan (``origins``), and at each of them which layers get a new plan from
which estimated loads (``decide``: a :class:`Replan` of shares ``[L, E]``, a mask of layers
and the per-step samples the plan is for, or None to keep every plan). The estimates are
moetrace.placement.estimates'; every one but the hindsight's uses only steps up to the
re-plan step. Policies are picklable dataclasses of plain settings, so a
list of them goes to a worker process as it is.

- ``static``: never re-plans; expert e stays on GPU e // (E / G), no replicas.
- ``window``: every re-plan interval, the token counts of the last ``window`` steps (vLLM's
  EPLB: window 1000).
- ``forecast``: every re-plan interval, a predictor's mean forecast share over the interval.
- ``hindsight``: every re-plan interval, planned knowing the interval's actual steps
  (evaluation only). A reference, not a bound: other policies can beat it, and a policy
  that re-plans more often than the interval is not held to its cadence. ``oracle``, its
  name in 0.2, is accepted until 0.4 (with a note).
- ``adaptive``: state-aware. A layer the online detector calls transient at the re-plan step
  is re-planned every quarter interval from its last quarter interval of counts (its load is
  moving; old history misleads); a stable layer is re-planned, at the interval grid only,
  when the forecast says a new plan would raise its balancedness by more than ``tolerance``
  over the current plan's (fewer moves for the same balance). ``watch`` applies the same rule
  (:meth:`Adaptive.rule`) to a running job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from moetrace.defaults import LOAD_WINDOW, REPLAN_GAIN, TRANSIENT_SPLITS
from moetrace.errors import ParameterError
from moetrace.placement.cluster import Cluster
from moetrace.placement.estimates import (RENAMED, SCENARIOS, Estimates, canonical,
                                          sample_blocks)
from moetrace.placement.rebalance import BLOCKS, SELECT_SAMPLES
from moetrace.placement.scoring import mean_balancedness, spread_rows
from moetrace.trace.shares import Loads


@dataclass
class ReplayContext:
    """What every policy may ask at a re-plan step: the estimates (cached by step), the
    cluster, the re-plan grid and the online state labels."""

    estimates: Estimates
    cluster: Cluster
    grid: np.ndarray  # the re-plan grid: training steps one re-plan interval apart
    online_stable: np.ndarray | None  # (L, T) causal stable labels, for state-aware policies

    @property
    def loads(self) -> Loads:
        return self.estimates.loads

    @property
    def replan_interval(self) -> int:
        return self.estimates.replan_interval

    @property
    def notes(self) -> list[str]:
        return self.estimates.notes

    @property
    def last(self) -> int:
        return int(self.loads.steps[-1])

    def online_stable_at(self, t: int) -> np.ndarray:
        """[L] what the online detector believed at step ``t`` (transient before any sample)."""
        if self.online_stable is None:
            raise ParameterError("a state-aware policy needs the online state labels")
        i = self.loads.index(t) - 1
        if i < 0:
            return np.zeros(self.loads.n_layers, dtype=bool)
        return self.online_stable[:, i]


@dataclass(frozen=True)
class Replan:
    """What a policy decided at a re-plan step: the layers to re-plan, the estimated loads
    they are planned from and the per-step samples the plan is for (Estimates.samples)."""

    shares: np.ndarray  # (L, E)
    layers: np.ndarray  # (L,) bool
    samples: np.ndarray | None  # (L, S, E), or None: plan for the shares alone
    #: in how many consecutive blocks of the samples a plan must beat EPLB's (1: the samples
    #: are the steps to come, as in hindsight; see moetrace.placement.rebalance.BLOCKS)
    blocks: int = BLOCKS


class PlacementPolicy(Protocol):
    name: str

    def origins(self, ctx: ReplayContext) -> np.ndarray:
        """Training steps at which this policy may re-plan (the first is the replay's start)."""
        ...

    def decide(self, ctx: ReplayContext, t: int, current: np.ndarray) -> Replan | None:
        """The :class:`Replan` at step ``t``, or None: keep every plan."""
        ...


def _all(ctx: ReplayContext) -> np.ndarray:
    return np.ones(ctx.loads.n_layers, dtype=bool)


def _from(ctx: ReplayContext, source: str, t: int, **options) -> Replan:
    """Every layer re-planned from estimate ``source`` at ``t`` (with its samples)."""
    return Replan(ctx.estimates.estimate(source, t, **options), _all(ctx),
                  ctx.estimates.samples(source, t, **options), sample_blocks(source))


@dataclass
class Static:
    name: str = "static"

    def origins(self, ctx):
        return ctx.grid[:1]

    def decide(self, ctx, t, current):
        return None


@dataclass
class Window:
    window: int = LOAD_WINDOW
    name: str = "window"

    def origins(self, ctx):
        return ctx.grid

    def decide(self, ctx, t, current):
        return _from(ctx, "window", t, window=self.window)


@dataclass
class Forecast:
    predictor: str = "auto"
    name: str = "forecast"

    def origins(self, ctx):
        return ctx.grid

    def decide(self, ctx, t, current):
        return _from(ctx, "forecast", t, predictor=self.predictor)


@dataclass
class Hindsight:
    name: str = "hindsight"

    def origins(self, ctx):
        return ctx.grid

    def decide(self, ctx, t, current):
        return _from(ctx, "hindsight", t)


#: the former name of :class:`Hindsight` (0.2; accepted until 0.4)
Oracle = Hindsight


@dataclass
class Decision:
    """What :meth:`Adaptive.rule` decided at one step."""

    shares: np.ndarray  # (L, E) the estimate each re-planned layer is planned from
    replan: np.ndarray  # (L,) bool: the layers re-planned
    transient: np.ndarray  # (L,) bool: the layers the online detector called transient
    samples: np.ndarray | None  # (L, S, E): the per-step loads each layer is planned for
    #: (L,) forecast balancedness of the plan in force and of a fresh plan, where the rule
    #: compared them (stable layers on the grid after the first plan), else None
    in_force: np.ndarray | None = None
    fresh: np.ndarray | None = None
    #: in how many blocks of ``samples`` a plan must beat EPLB's (estimates.sample_blocks)
    blocks: int = BLOCKS

    def as_policy(self) -> Replan | None:
        """What :meth:`PlacementPolicy.decide` returns."""
        return (Replan(self.shares, self.replan, self.samples, self.blocks)
                if self.replan.any() else None)


@dataclass
class Adaptive:
    predictor: str = "auto"
    tolerance: float = REPLAN_GAIN
    splits: int = TRANSIENT_SPLITS
    name: str = "adaptive"

    def quarter(self, replan_interval: int, sampling_interval: int) -> int:
        """Training steps between the re-plans of a transient layer (a quarter re-plan
        interval with the default splits), never less than one sample."""
        return max(replan_interval // self.splits, sampling_interval)

    def origins(self, ctx):
        step = self.quarter(ctx.replan_interval, ctx.loads.interval)
        return np.arange(ctx.grid[0], ctx.last, step, dtype=np.int64)

    def decide(self, ctx, t, current):
        start = int(ctx.grid[0])
        step = self.quarter(ctx.replan_interval, ctx.loads.interval)
        return self.rule(ctx.estimates, t, current, ctx.online_stable_at(t), ctx.cluster,
                         first=t == start,
                         on_grid=on_grid(t, t - step, start, ctx.replan_interval)).as_policy()

    def rule(self, estimates: Estimates, t: int, current: np.ndarray, stable: np.ndarray,
             cluster: Cluster, *, first: bool, on_grid: bool) -> Decision:
        """The adaptive rule at step ``t`` for layers believed ``stable [L]`` now, with the
        plan ``current`` (replicas [L, E, G]) in force: every transient layer is re-planned
        from its last quarter interval of counts; at the first plan every stable layer, and
        later on the grid each stable layer whose fresh plan gains more than ``tolerance``
        under the forecast, is re-planned from the forecast."""
        loads = estimates.loads
        transient = ~np.asarray(stable, dtype=bool)
        shares = np.zeros((loads.n_layers, loads.n_experts))
        replan = transient.copy()
        short_samples = forecast_samples = None
        if transient.any():
            short = self.quarter(estimates.replan_interval, loads.interval)
            shares[transient] = estimates.window(t, short)[transient]
            short_samples = estimates.samples("window", t, window=short)
        decision = Decision(shares, replan, transient, short_samples)
        if (first or on_grid) and not transient.all():
            forecast = estimates.forecast(t, self.predictor)
            forecast_samples = estimates.samples("forecast", t, predictor=self.predictor)
            if first:
                gain = np.full(loads.n_layers, np.inf)
            else:
                decision.in_force, decision.fresh = forecast_balancedness(
                    forecast, current, cluster, forecast_samples)
                gain = decision.fresh - decision.in_force
            chosen = ~transient & (gain > self.tolerance)
            shares[chosen] = forecast[chosen]
            replan |= chosen
            decision.samples = _mixed(short_samples, forecast_samples, transient)
            decision.blocks = sample_blocks("forecast")
        return decision


def _mixed(short: np.ndarray | None, forecast: np.ndarray, transient: np.ndarray
           ) -> np.ndarray:
    """Per layer, the transient layers' samples from ``short`` and the others' from
    ``forecast``, both brought to one number of steps per scenario (rows spread evenly,
    repeated where there are fewer): the short window stands in each of the forecast's
    scenarios (estimates.SCENARIOS), so its blocks are those it would have alone."""
    if short is None or not transient.any():
        return forecast
    scenarios = SCENARIOS["forecast"] if forecast.shape[1] > 1 else 1
    steps = max(short.shape[1], forecast.shape[1] // scenarios)

    def stretch(rows: np.ndarray) -> np.ndarray:
        at = np.linspace(0, rows.shape[1] - 1, steps).round().astype(np.int64)
        return np.asarray(rows[:, at], dtype=np.float32)

    parts = np.split(forecast, scenarios, axis=1)
    return np.where(transient[:, None, None], np.tile(stretch(short), (1, scenarios, 1)),
                    np.concatenate([stretch(p) for p in parts], axis=1))


def on_grid(t: int, previous: int, start: int, replan_interval: int) -> bool:
    """Whether a point of the re-plan grid (``start`` + k x ``replan_interval``) lies in
    (``previous``, ``t``]: the first re-plan step at or after each grid point is the one at
    which the adaptive rule looks at stable layers."""
    return (t - start) // replan_interval > (previous - start) // replan_interval


def forecast_balancedness(forecast: np.ndarray, current: np.ndarray, cluster: Cluster,
                          samples: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """([L], [L]): the balancedness of the plan in force and of a new plan (the re-plan the
    cluster would make from it), both as the forecast expects them: the mean over its
    ``samples`` [L, S, E] (Estimates.samples), or under the ``forecast`` shares alone."""
    fresh = cluster.plan(forecast, current, samples, sample_blocks("forecast"))
    judged = (np.asarray(forecast, dtype=np.float32)[:, None, :] if samples is None
              else np.asarray(samples)[:, spread_rows(samples.shape[1], SELECT_SAMPLES)])
    return mean_balancedness(judged, current), mean_balancedness(judged, fresh)


#: policy name -> class; ``make_policies`` builds them with the replay's settings
POLICIES = {"static": Static, "window": Window, "forecast": Forecast, "hindsight": Hindsight,
            "adaptive": Adaptive}
DEFAULT_POLICIES = ("static", "window", "forecast", "adaptive", "hindsight")


def make_policies(names, *, window: int = LOAD_WINDOW, predictor: str = "auto",
                  notes: list[str] | None = None) -> list[PlacementPolicy]:
    """Policies by name; ``forecast:NAME`` picks the predictor of one forecast policy.
    ``oracle`` (its name in 0.2; accepted until 0.4) makes the ``hindsight`` policy, with a
    line in ``notes``."""
    made: list[PlacementPolicy] = []
    for spec in names:
        if spec.partition(":")[0] in RENAMED:
            if notes is not None:
                notes.append(f"policy '{spec.partition(':')[0]}' is now called "
                             f"'{canonical(spec)}' (a hindsight plan: a reference other "
                             "policies may beat, not a bound); the old name goes after 0.2")
            spec = canonical(spec)
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
