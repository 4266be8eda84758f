"""Replay placement policies over a trace: what each would have cost, step by step.

Every policy starts from the static placement; from the replay's start it re-plans at its own
origins and holds each plan until its next re-plan. At every step each GPU's tokens are the
step's expert counts times the share of each expert the GPU holds (an expert's tokens split
evenly over its replicas): one batched matrix product per layer and plan segment, never a loop
over steps. Per (layer, step): balancedness = mean / max GPU tokens (vLLM's definition) and the
max and mean themselves (the modeled MoE compute time is proportional to the max; a perfectly
balanced step takes the mean). Per re-plan: the replicas placed on a GPU that did not hold
them (and what a fresh plan would have moved), their bytes, and each GPU's incoming replicas
from its own node and from others. The time model (moetrace.placement.timing) turns the max
into compute seconds and the moves into seconds, against the static placement.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from moetrace.defaults import BYTES_PER_PARAM, LOAD_WINDOW, REPLAN_INTERVAL
from moetrace.errors import ParameterError
from moetrace.progress import Progress
from moetrace.placement.cluster import Cluster, balancedness, moved_replicas
from moetrace.placement.scoring import gpu_tokens
from moetrace.placement.estimates import Estimates
from moetrace.placement.policies import PlacementPolicy, ReplayContext
from moetrace.placement.timing import TimeModel, gpu_moves
from moetrace.trace.shares import Loads

__all__ = ["BYTES_PER_PARAM", "PlacementReplay", "PolicyReplay", "ReplayContext",
           "expert_parameters", "replay"]

STATES = ("all", "transient", "stable")
#: a window-to-oracle balancedness gap below this (half a point) is noise: no share of it is
#: reported as closed
MIN_GAP = 0.005


def expert_parameters(metadata) -> int | None:
    """Parameters of one expert, from what the trace says about its model (None: unknown)."""
    extra = metadata.extra or {}
    if isinstance(extra.get("expert_params"), int):
        return int(extra["expert_params"])
    preset = extra.get("preset")
    if isinstance(preset, str):
        from moetrace.simulate.config import PRESETS

        if preset in PRESETS and PRESETS[preset].expert_params:
            return PRESETS[preset].expert_params
    demo = extra.get("demo_config")
    if isinstance(demo, dict) and {"d_model", "d_expert"} <= set(demo):
        return 2 * int(demo["d_model"]) * int(demo["d_expert"])
    return None


@dataclass
class PolicyReplay:
    """One policy over the scored steps: per-cell arrays are [L, S] over ``steps``."""

    name: str
    balancedness: np.ndarray  # (L, S)
    peak: np.ndarray  # (L, S) max GPU tokens
    mean: np.ndarray  # (L, S) mean GPU tokens
    replans: list[tuple[int, np.ndarray]]  # (step, layers re-planned [L] bool)
    moved: list[np.ndarray]  # replicas moved at each re-plan, [L] each
    scratch: list[np.ndarray]  # ... that a fresh plan would have moved at each re-plan
    received: list[tuple[np.ndarray, np.ndarray]]  # per re-plan, replicas each GPU received
    #                        from its own node and from another, [L, G] each
    final: np.ndarray  # the plan in force at the end, replicas [L, E, G]
    seconds: float
    predictor: str | None = None  # the predictor behind its forecasts, if any
    cadence: int | None = None  # training steps between its re-plan steps (None: never)


@dataclass
class PlacementReplay:
    """Every policy's replay, plus what it was run with."""

    steps: np.ndarray  # (S,) scored steps: after the first re-plan
    layers: list[int]
    cluster: Cluster
    slots: int
    interval: int  # the re-plan interval (training steps)
    start: int
    window: int
    time_model: TimeModel
    policies: list[PolicyReplay]
    stable: np.ndarray | None  # (L, S) hindsight labels of the scored steps
    notes: list[str]
    baseline: np.ndarray  # (L, S) max GPU tokens of the static placement (what is saved)
    _rows: list | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def expert_params(self) -> int | None:
        return self.time_model.expert_params

    @property
    def bytes_per_param(self) -> int:
        return self.time_model.bytes_per_param

    @property
    def sampling(self) -> int:
        """Training steps per scored row (1 unless the trace is sampled)."""
        return Loads.axis(self.steps).interval

    @classmethod
    def merge(cls, parts: list["PlacementReplay"]) -> "PlacementReplay":
        """One replay over every layer from replays over chunks of layers (same steps,
        cluster and policies, in layer order). A re-plan step of any chunk is a re-plan step
        of the whole, with the layers of the other chunks not re-planned."""
        if len(parts) == 1:
            return parts[0]
        first = parts[0]
        sizes = [len(p.layers) for p in parts]
        policies = []
        for i, head in enumerate(first.policies):
            chunk = [p.policies[i] for p in parts]
            events: dict[int, list[list]] = {}
            gpus = first.cluster.gpus
            for j, c in enumerate(chunk):
                for (t, which), moved, scratch, (near, far) in zip(c.replans, c.moved,
                                                                   c.scratch, c.received):
                    parts_at = events.setdefault(
                        t, [[np.zeros(n, dtype=bool) for n in sizes],
                            *([np.zeros(n, dtype=np.int64) for n in sizes] for _ in range(2)),
                            *([np.zeros((n, gpus), dtype=np.int64) for n in sizes]
                              for _ in range(2))])
                    for k, value in enumerate((which, moved, scratch, near, far)):
                        parts_at[k][j] = value
            order = sorted(events)
            join = [[np.concatenate(events[t][k]) for t in order] for k in range(5)]
            policies.append(PolicyReplay(
                head.name, *(np.concatenate([getattr(c, k) for c in chunk])
                             for k in ("balancedness", "peak", "mean")),
                list(zip(order, join[0])), join[1], join[2], list(zip(join[3], join[4])),
                np.concatenate([c.final for c in chunk]), sum(c.seconds for c in chunk),
                head.predictor, head.cadence))
        stable = (None if any(p.stable is None for p in parts)
                  else np.concatenate([p.stable for p in parts]))
        notes = list(dict.fromkeys(n for p in parts for n in p.notes))
        return cls(first.steps, [x for p in parts for x in p.layers], first.cluster,
                   first.slots, first.interval, first.start, first.window, first.time_model,
                   policies, stable, notes, np.concatenate([p.baseline for p in parts]))

    def bytes_per_replica(self) -> int | None:
        return self.time_model.bytes_per_replica()

    def policy(self, name: str) -> PolicyReplay | None:
        return next((p for p in self.policies if p.name == name), None)

    def gap_closed(self, state: str = "all") -> dict[str, float | None]:
        """For each policy that re-plans at the cadence of window and hindsight (every
        re-plan interval; adaptive does not): the share of the balancedness gap between
        window and hindsight that it closes (None when the gap is under MIN_GAP). A share
        over 1 means it beat the hindsight plan, which is a reference, not a bound."""
        mean = {r["policy"]: r["balancedness"] for r in self.rows()
                if r["layer"] is None and r["state"] == state}
        window, hindsight = self.policy("window"), self.policy("hindsight")
        if window is None or hindsight is None or state not in STATES \
                or "window" not in mean or "hindsight" not in mean:
            return {}
        gap = mean["hindsight"] - mean["window"]
        return {p.name: (mean[p.name] - mean["window"]) / gap if gap > MIN_GAP else None
                for p in self.policies
                if p.name not in ("window", "hindsight", "static") and p.name in mean
                and p.cadence == window.cadence}

    def verdict(self) -> dict[str, Any] | None:
        """What re-planning bought over this replay, for a report's first sentence: the
        policy with the most net modeled seconds saved against the static placement (over
        all layers and states), those seconds in all and per step, and against the window
        policy at the same cadence (None: no window policy, or another cadence); None when
        the time model cannot price the replay (docs/placement.md)."""
        if not self.time_model.known():
            return None
        overall = {r["policy"]: r for r in self.rows()
                   if r["layer"] is None and r["state"] == "all"}
        candidates = [p for p in self.policies if p.name not in ("static", "hindsight")]
        if not candidates:
            return None
        best = max(candidates, key=lambda p: overall[p.name]["net_seconds_saved"])
        row = overall[best.name]
        window = self.policy("window")
        same = window is not None and window.cadence == best.cadence
        steps = len(self.steps) * self.sampling
        return {
            "policy": best.name,
            "pays": row["net_seconds_saved"] > 0,
            "net_seconds_saved": row["net_seconds_saved"],
            "net_seconds_saved_per_step": row["net_seconds_saved_per_step"],
            "balancedness": row["balancedness"],
            "static_balancedness": overall["static"]["balancedness"]
            if "static" in overall else None,
            "net_seconds_vs_window": (row["net_seconds_saved"]
                                      - overall["window"]["net_seconds_saved"]
                                      if same and best.name != "window" else None),
            "steps": steps,
        }

    def document(self, trace: str) -> dict[str, Any]:
        """The versioned JSON of ``replay`` (docs/placement.md)."""
        c = self.cluster
        return {
            "schema": "moetrace.placement-replay", "version": 1, "trace": trace,
            "cluster": {"gpus": c.gpus, "nodes": c.nodes, "groups": c.groups,
                        "replicas": self.slots, "rebalance": c.planner,
                        "move_tolerance": c.move_tolerance},
            "interval": self.interval, "start": self.start, "window": self.window,
            "steps_scored": int(len(self.steps)), "expert_params": self.expert_params,
            "bytes_per_param": self.bytes_per_param,
            "time_model": self.time_model.document(),
            "policies": [p.name for p in self.policies],
            "predictors": {p.name: p.predictor for p in self.policies if p.predictor},
            "cadence": {p.name: p.cadence for p in self.policies},
            "seconds": {p.name: round(p.seconds, 3) for p in self.policies},
            "gap_closed": {state: self.gap_closed(state) for state in STATES},
            "verdict": self.verdict(),
            "results": self.rows(), "notes": self.notes,
        }

    def series(self) -> dict[str, np.ndarray]:
        """Per policy, the balancedness of each scored step averaged over layers: (S,)."""
        return {p.name: p.balancedness.mean(axis=0) for p in self.policies}

    def _state_at(self, steps: list[int]) -> list[np.ndarray | None]:
        """Each layer's stable label at each of ``steps`` (the first step's where a step is
        not one of the trace's); None without labels."""
        if self.stable is None:
            return [None] * len(steps)
        axis = Loads.axis(self.steps)
        cols = [axis.index(t) - 1 for t in steps]  # the row of step t, if it is one
        return [self.stable[:, c if c >= 0 and self.steps[c] == t else 0]
                for c, t in zip(cols, steps)]

    def rows(self) -> list[dict[str, Any]]:
        """One row per policy x layer (None: all layers) x state; see docs/placement.md.
        (Computed once; each call gets its own copies.)"""
        if self._rows is None:
            self._rows = self._make_rows()
        return [dict(row) for row in self._rows]

    def _make_rows(self) -> list[dict[str, Any]]:
        rows = []
        per_replica = self.bytes_per_replica()
        model = self.time_model
        per_token = model.seconds_per_token()
        timed = model.known()
        training_steps = len(self.steps) * self.sampling
        for p in self.policies:
            at_step = self._state_at([t for t, _ in p.replans])
            for layer in [None, *range(len(self.layers))]:
                picked = slice(None) if layer is None else slice(layer, layer + 1)
                for state in STATES:
                    cells = self._cells(state)[picked]
                    if not cells.any():
                        continue
                    bal = p.balancedness[picked][cells]
                    replans, moved, scratch, move_seconds = 0, 0, 0, 0.0
                    for (_, which), count, fresh, (near, far), at in zip(
                            p.replans, p.moved, p.scratch, p.received, at_step):
                        in_state = which.copy()
                        if state != "all" and at is not None:
                            in_state &= at if state == "stable" else ~at
                        chosen = in_state[picked]
                        replans += int(chosen.any())
                        moved += int(count[picked][chosen].sum())
                        scratch += int(fresh[picked][chosen].sum())
                        if timed and chosen.any():
                            move_seconds += model.move_seconds(
                                near[picked][chosen].sum(axis=0), far[picked][chosen].sum(axis=0))
                    compute = saved = net = None
                    if timed:
                        compute = float(p.peak[picked][cells].sum(dtype=np.float64)
                                        * per_token * self.sampling)
                        static = float(self.baseline[picked][cells].sum(dtype=np.float64)
                                       * per_token * self.sampling)
                        saved = static - compute
                        net = saved - move_seconds
                    rows.append({
                        "policy": p.name,
                        "layer": None if layer is None else self.layers[layer],
                        "state": state,
                        "balancedness": float(bal.mean()),
                        "balancedness_p5": float(np.quantile(bal, 0.05)),
                        "time_vs_balanced": float(p.peak[picked][cells].sum()
                                                  / max(p.mean[picked][cells].sum(), 1e-300)),
                        "replans": replans,
                        "replicas_moved": moved,
                        "bytes_moved": None if per_replica is None else moved * per_replica,
                        "moves": moved,
                        "moves_from_scratch": scratch,
                        "bytes_from_scratch": (None if per_replica is None
                                               else scratch * per_replica),
                        "compute_seconds": compute,
                        "compute_seconds_saved": saved,
                        "move_seconds": move_seconds if timed else None,
                        "net_seconds_saved": net,
                        "net_seconds_saved_per_step": (None if net is None
                                                       else net / training_steps),
                    })
        return rows

    def _cells(self, state: str) -> np.ndarray:
        shape = (len(self.layers), len(self.steps))
        if state == "all" or self.stable is None:
            return np.ones(shape, dtype=bool) if state == "all" else np.zeros(shape, bool)
        return self.stable if state == "stable" else ~self.stable


def replay(loads: Loads, cluster: Cluster, policies: Sequence[PlacementPolicy], *,
           interval: int = REPLAN_INTERVAL, start: int | None = None,
           window: int = LOAD_WINDOW,
           stable: np.ndarray | None = None, online_stable: np.ndarray | None = None,
           expert_params: int | None = None, bytes_per_param: int = BYTES_PER_PARAM,
           time_model: TimeModel | None = None, estimates: Estimates | None = None,
           progress: Progress | None = None) -> PlacementReplay:
    """Replay ``policies`` over ``loads`` on ``cluster``; see the module docstring.

    ``interval`` (the re-plan interval) and ``window`` (the load window) are training steps;
    the first re-plan is at ``start`` (default: ``max(window, interval)`` steps after the
    first, so a window estimate is full) and every ``interval`` steps after it. ``stable``
    (L, T) hindsight labels split the results by state; ``online_stable`` (L, T) causal
    labels drive state-aware policies. ``policies`` are policy objects
    (:func:`~moetrace.placement.policies.make_policies`), picklable as they are.
    ``time_model`` (moetrace.placement.timing) prices compute and moves; without one,
    ``expert_params`` and ``bytes_per_param`` make the default model. ``estimates``: load
    estimates of the same ``loads`` and re-plan ``interval`` to share (and fill) their cache,
    as a search over clusters and windows does.
    """
    if interval < 1 or window < 1:
        raise ParameterError("--replan-interval and --load-window must be positive numbers of "
                             "steps")
    if expert_params is not None and expert_params < 1:
        raise ParameterError(f"--expert-params must be positive, got {expert_params}")
    if time_model is None:
        time_model = TimeModel(expert_params=expert_params, bytes_per_param=bytes_per_param)
    slots = cluster.slots(loads.n_experts)
    steps = loads.steps
    first, last = int(steps[0]), int(steps[-1])
    start = first + max(window, interval) - loads.interval if start is None else int(start)
    if not first <= start < last:
        raise ParameterError(f"the first re-plan (step {start:,}) must fall inside the trace "
                             f"(steps {first:,} to {last:,}); give a smaller --load-window or "
                             "--replan-interval, or --start")
    grid = np.arange(start, last, interval, dtype=np.int64)
    done = {"n": 0}
    total = len(policies)

    def note(task: str) -> None:
        if progress is not None:
            progress(done["n"], total, task)

    if estimates is None:
        estimates = Estimates(loads, interval, progress=note)
    elif estimates.loads is not loads or estimates.replan_interval != interval:
        raise ParameterError("the estimates given are of other loads or another re-plan "
                             "interval")
    ctx = ReplayContext(estimates, cluster, grid, online_stable)
    lo = loads.index(start)
    results = []
    for policy in policies:
        note(policy.name)
        with one_blas_thread():
            results.append(_replay_one(ctx, policy, lo))
        done["n"] += 1
        note(policy.name)
    scored_stable = None if stable is None else stable[:, lo:]
    static = cluster.static(loads.n_layers, loads.n_experts)
    with one_blas_thread():
        baseline = gpu_tokens(loads.counts[:, lo:], static).max(axis=2)
    return PlacementReplay(steps[lo:], list(loads.layers), cluster, slots, interval, start,
                           window, time_model, results, scored_stable, list(ctx.notes),
                           baseline)


def one_blas_thread():
    """BLAS on one thread: the replay's products are small (one layer chunk's plans and
    steps) and many; threads gain little on them and lose much on a busy machine. Parallel
    work is over chunks of layers (moetrace.scale), not inside a product."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1, user_api="blas")


def _replay_one(ctx: ReplayContext, policy: PlacementPolicy, lo: int) -> PolicyReplay:
    began = time.perf_counter()
    loads, cluster = ctx.loads, ctx.cluster
    n_layers, n_steps = loads.n_layers, loads.n_steps
    current = cluster.static(n_layers, loads.n_experts)
    origins = np.unique(np.asarray(policy.origins(ctx), dtype=np.int64))
    bounds = [loads.index(int(t)) for t in origins[1:]]  # one per re-plan, not per step
    segments = list(zip([lo, *bounds], [*bounds, n_steps]))
    size = n_steps - lo
    bal = np.empty((n_layers, size), dtype=np.float32)
    peak = np.empty_like(bal)
    mean = np.empty_like(bal)
    replans, moved, scratch, received = [], [], [], []
    for t, (a, b) in zip(origins, segments):
        decision = policy.decide(ctx, int(t), current)
        if decision is not None and decision.layers.any():
            which = decision.layers
            samples = None if decision.samples is None else decision.samples[which]
            made = cluster.layout(np.asarray(decision.shares)[which], current[which], samples,
                                  decision.blocks)
            fresh = current.copy()
            fresh[which] = made.replicas
            moved.append(moved_replicas(current, fresh))
            from_scratch = np.zeros(n_layers, dtype=np.int64)
            from_scratch[which] = made.scratch_moves
            scratch.append(from_scratch)
            received.append(gpu_moves(current, fresh, cluster.nodes))
            replans.append((int(t), which.copy()))
            current = fresh
        if b > a:
            gpu = gpu_tokens(loads.counts[:, a:b], current)
            bal[:, a - lo:b - lo] = balancedness(gpu)
            peak[:, a - lo:b - lo] = gpu.max(axis=2)
            mean[:, a - lo:b - lo] = gpu.mean(axis=2)
    gaps = np.diff(origins)
    cadence = None if len(origins) < 2 else int(gaps.min())
    return PolicyReplay(policy.name, bal, peak, mean, replans, moved, scratch, received,
                        current, time.perf_counter() - began,
                        getattr(policy, "predictor", None), cadence)
