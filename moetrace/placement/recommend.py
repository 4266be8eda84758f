"""The setting to pick: which re-plan policy, how often, from how long a window, with how many
redundant slots, by the modeled time it saves after paying for its moves.

:func:`recommend` replays a small grid (moetrace.defaults: ``RECOMMEND_INTERVALS`` x
``RECOMMEND_WINDOWS`` x ``RECOMMEND_REDUNDANT`` for the window policy, and the forecast and
adaptive policies at each interval and redundancy) over the same scored steps, prices every
cell with the time model (moetrace.placement.timing) and keeps the one with the largest net
seconds saved against the static placement. When no cell saves time net of its moves, the
recommendation is the static placement itself: re-planning does not pay on this trace.

Every cell starts its first re-plan at the same step (the latest any cell needs: its load
window and its re-plan interval both full), so every cell is scored on the same steps; the
load estimates of one re-plan interval are shared by the cells that use it (a forecast is
fitted once per step).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from moetrace.defaults import (RECOMMEND_INTERVALS, RECOMMEND_POLICIES, RECOMMEND_REDUNDANT,
                               RECOMMEND_WINDOWS)
from moetrace.display import format_seconds
from moetrace.errors import ParameterError
from moetrace.placement.cluster import Cluster
from moetrace.placement.estimates import Estimates
from moetrace.placement.policies import make_policies
from moetrace.placement.replay import PlacementReplay, replay
from moetrace.placement.timing import TimeModel
from moetrace.progress import Progress
from moetrace.trace.shares import Loads

SCHEMA = "moetrace.placement-recommendation"
#: the keys of ``recommendation`` in the document, in order
RECOMMENDATION_KEYS = ("policy", "interval", "window", "redundant", "net_seconds_saved",
                       "balancedness")


@dataclass(frozen=True)
class Setting:
    """One cell of the grid."""

    policy: str  # window, forecast or adaptive
    interval: int  # re-plan interval, training steps
    window: int | None  # the load window (the window policy's), training steps
    redundant: int  # redundant slots


@dataclass(frozen=True)
class Grid:
    """The values searched (each a tuple; see the module docstring)."""

    intervals: tuple[int, ...] = RECOMMEND_INTERVALS
    windows: tuple[int, ...] = RECOMMEND_WINDOWS
    redundant: tuple[int, ...] | None = None  # slots; None: RECOMMEND_REDUNDANT x GPUs
    policies: tuple[str, ...] = RECOMMEND_POLICIES

    def fitted(self, loads: Loads, cluster: Cluster, n_experts: int
               ) -> tuple["Grid", list[str]]:
        """The grid cut to what the trace (``loads``: its time axis is enough) can score (an
        interval or window at most half its span), with a note per value left out; slot
        counts the cluster cannot take for ``n_experts`` experts are an error."""
        span, notes = loads.span, []
        redundant = self.redundant if self.redundant is not None else tuple(
            k * cluster.gpus for k in RECOMMEND_REDUNDANT)
        for name, values in (("re-plan interval", self.intervals),
                             ("load window", self.windows)):
            if not values or min(values) < 1:
                raise ParameterError(f"the {name}s searched must be positive numbers of "
                                     "steps")
        if not redundant or min(redundant) < 0:
            raise ParameterError("the redundant slots searched must be 0 or more")
        unknown = [p for p in self.policies if p not in RECOMMEND_POLICIES]
        if unknown or not self.policies:
            raise ParameterError(f"the policies searched are among "
                                 f"{', '.join(RECOMMEND_POLICIES)}, got "
                                 f"{', '.join(self.policies) or 'none'}")
        keep = lambda values: tuple(v for v in values if 2 * v <= span)  # noqa: E731
        intervals, windows = keep(self.intervals), keep(self.windows)
        for name, values, kept in (("re-plan interval", self.intervals, intervals),
                                   ("load window", self.windows, windows)):
            if not kept:
                raise ParameterError(f"the trace spans {span:,} steps: too short for a "
                                     f"{name} of {min(values):,} (it may take at most half "
                                     "of the trace)")
            left = sorted(set(values) - set(kept))
            if left:
                notes.append(f"{name}s {', '.join(f'{v:,}' for v in left)} left out: longer "
                             f"than half the trace ({span:,} steps)")
        for extra in redundant:
            cluster.with_(redundant=extra).slots(n_experts)  # a misfit is an error
        return Grid(intervals, windows, tuple(sorted(set(redundant))), self.policies), notes

    def cells(self) -> list[Setting]:
        cells = []
        for redundant in self.redundant:
            for interval in self.intervals:
                for policy in self.policies:
                    for window in (self.windows if policy == "window" else (None,)):
                        cells.append(Setting(policy, interval, window, redundant))
        return cells

    def document(self) -> dict[str, Any]:
        return {"intervals": list(self.intervals), "windows": list(self.windows),
                "redundant": list(self.redundant or ()), "policies": list(self.policies)}


@dataclass
class Recommendation:
    """Every cell's replay (and the static placement's), from which the rows and the pick
    are made; :meth:`merge` joins chunks of layers."""

    grid: Grid
    cluster: Cluster
    cells: list[tuple[Setting, PlacementReplay]]
    static: PlacementReplay
    predictor: str
    notes: list[str]

    @classmethod
    def merge(cls, parts: list["Recommendation"]) -> "Recommendation":
        if len(parts) == 1:
            return parts[0]
        first = parts[0]
        cells = [(setting, PlacementReplay.merge([p.cells[i][1] for p in parts]))
                 for i, (setting, _) in enumerate(first.cells)]
        notes = list(dict.fromkeys(n for p in parts for n in p.notes))
        return cls(first.grid, first.cluster, cells,
                   PlacementReplay.merge([p.static for p in parts]), first.predictor, notes)

    @property
    def time_model(self) -> TimeModel:
        return self.static.time_model

    def rows(self) -> list[dict[str, Any]]:
        """One row per cell: its setting and its replay's row over all layers and states."""
        rows = []
        for setting, result in self.cells:
            overall = _overall(result)
            rows.append({"policy": setting.policy, "interval": setting.interval,
                         "window": setting.window, "redundant": setting.redundant,
                         **{k: v for k, v in overall.items()
                            if k not in ("policy", "layer", "state")}})
        return rows

    def static_row(self) -> dict[str, Any]:
        overall = _overall(self.static)
        return {"policy": "static", "interval": None, "window": None, "redundant": 0,
                **{k: v for k, v in overall.items() if k not in ("policy", "layer", "state")}}

    def ranked(self) -> list[dict[str, Any]]:
        """The rows by net seconds saved, best first (ties: fewer moves, then the grid's
        order)."""
        rows = self.rows()
        order = sorted(range(len(rows)), key=lambda i: (-rows[i]["net_seconds_saved"],
                                                        rows[i]["moves"], i))
        return [rows[i] for i in order]

    def pays(self) -> bool:
        """Whether the best cell saves modeled time net of its moves."""
        ranked = self.ranked()
        return bool(ranked) and ranked[0]["net_seconds_saved"] > 0

    def choice(self) -> dict[str, Any]:
        """The row recommended: the best cell, or the static placement when none pays."""
        return self.ranked()[0] if self.pays() else self.static_row()

    def runner_up(self) -> dict[str, Any] | None:
        ranked = self.ranked()
        if not self.pays():
            return ranked[0] if ranked else None
        return ranked[1] if len(ranked) > 1 else None

    def sentence(self) -> str:
        """The recommendation in one sentence (plain text)."""
        steps = len(self.static.steps) * self.static.sampling
        ranked = self.ranked()
        best = ranked[0]
        if not self.pays():  # the best setting that moves anything, where one does
            best = next((r for r in ranked if r["moves"]), best)
            return (f"Re-planning does not pay on this trace: the best setting"
                    f"{' that moves anything' if best['moves'] else ''} "
                    f"({describe(best)}) saves {format_seconds(best['compute_seconds_saved'])} "
                    f"of modeled MoE compute over {steps:,} steps against the static "
                    f"placement, but its moves cost {format_seconds(best['move_seconds'])}; "
                    "keep the static placement.")
        return (f"Re-plan with {describe(best)}: it saves "
                f"{format_seconds(best['net_seconds_saved'])} of modeled MoE time over "
                f"{steps:,} steps against the static placement "
                f"({format_seconds(best['net_seconds_saved_per_step'])} per step) after "
                f"{format_seconds(best['move_seconds'])} of moves, at "
                f"{100 * best['balancedness']:.1f}% balancedness.")

    def document(self, trace: str) -> dict[str, Any]:
        """The versioned JSON of ``plan --recommend`` (docs/placement.md)."""
        c, choice = self.cluster, self.choice()
        runner = self.runner_up()
        return {
            "schema": SCHEMA, "version": 1, "trace": trace,
            "cluster": {"gpus": c.gpus, "nodes": c.nodes, "groups": c.groups,
                        "rebalance": c.planner, "move_tolerance": c.move_tolerance},
            "start": self.static.start, "steps_scored": int(len(self.static.steps)),
            "predictor": self.predictor, "time_model": self.time_model.document(),
            "searched": self.grid.document(),
            "pays": self.pays(),
            "recommendation": {k: choice[k] for k in RECOMMENDATION_KEYS},
            "setting": describe(choice),
            "runner_up": None if runner is None else {k: runner[k] for k in RECOMMENDATION_KEYS},
            "static": self.static_row(),
            "sentence": self.sentence(),
            "grid": self.ranked(), "notes": self.notes,
        }


def _overall(result: PlacementReplay) -> dict[str, Any]:
    return next(r for r in result.rows() if r["layer"] is None and r["state"] == "all")


def describe(row: dict[str, Any]) -> str:
    """A cell in words: ``window (the last 2,000 steps' counts), re-planned every 1,000
    steps, 8 redundant slots``."""
    if row["policy"] == "static":
        return "the static placement"
    what = {"window": f"window (the last {row['window'] or 0:,} steps' counts)",
            "forecast": "forecast", "adaptive": "adaptive (state-aware)"}[row["policy"]]
    every = ("re-planned every" if row["policy"] != "adaptive"
             else "stable layers looked at every")
    return f"{what}, {every} {row['interval']:,} steps, {row['redundant']} redundant slots"


def check_time_model(model: TimeModel) -> None:
    """A ParameterError unless ``model`` can price both compute and moves."""
    if not model.known():
        raise ParameterError("a recommendation weighs the seconds a setting saves against "
                             "the seconds its moves cost: it needs the size of an expert "
                             "(--expert-params; this trace does not say it)")


def recommend(loads: Loads, cluster: Cluster, *, grid: Grid = Grid(), predictor: str = "auto",
              time_model: TimeModel = TimeModel(), stable: np.ndarray | None = None,
              online_stable: np.ndarray | None = None, start: int | None = None,
              progress: Progress | None = None) -> Recommendation:
    """Replay every cell of ``grid`` (fitted to the trace) on ``cluster`` (its redundant
    slots are the grid's) and price it with ``time_model``; see the module docstring.
    ``start`` is the first re-plan (default: the latest any cell needs, so all are full)."""
    check_time_model(time_model)
    grid, notes = grid.fitted(loads, cluster, loads.n_experts)
    if start is None:
        start = int(loads.steps[0]) + max(max(grid.intervals),
                                          max(grid.windows)) - loads.interval
    cells = grid.cells()
    total, done = len(cells) + 1, [0]

    def step(task: str) -> None:
        if progress is not None:
            progress(done[0], total, task)

    estimates = {interval: Estimates(loads, interval) for interval in grid.intervals}
    common = {"start": start, "stable": stable, "online_stable": online_stable,
              "time_model": time_model}
    step("static")
    static = replay(loads, cluster.with_(redundant=0), make_policies(["static"]),
                    interval=min(grid.intervals), window=min(grid.windows), **common)
    done[0] += 1
    results = []
    for setting in cells:
        step(f"{setting.policy} every {setting.interval} steps, {setting.redundant} "
             "redundant slots")
        window = setting.window or setting.interval
        policies = make_policies([setting.policy], window=window, predictor=predictor)
        results.append((setting, replay(loads, cluster.with_(redundant=setting.redundant),
                                        policies, interval=setting.interval, window=window,
                                        estimates=estimates[setting.interval], **common)))
        done[0] += 1
    notes += list(dict.fromkeys(n for e in estimates.values() for n in e.notes))
    step("done")
    return Recommendation(grid, cluster, results, static, predictor, notes)


def grid_from(intervals: Sequence[int] | None, windows: Sequence[int] | None,
              redundant: Sequence[int] | None) -> Grid:
    """The default grid with the dimensions given fixed (None: searched)."""
    base = Grid()
    return Grid(tuple(intervals) if intervals else base.intervals,
                tuple(windows) if windows else base.windows,
                tuple(redundant) if redundant is not None else None, base.policies)
