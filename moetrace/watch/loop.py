"""The watch loop: poll for new parts, merge, update the state, report, write plans."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moetrace.defaults import POLL_SECONDS, REPLAN_INTERVAL, STALL_STEPS, STATE_WINDOW
from moetrace.jsondoc import dumps
from moetrace.output import write_file
from moetrace.watch.follow import Follower, Merger
from moetrace.watch.state import PlanSettings, WatchState


@dataclass
class WatchResult:
    state: WatchState | None
    updates: int
    reason: str  # why it ended: "until-step", "until-idle", "interrupted"
    problems: list[str]


def watch(root: str | Path, *, on_update: Callable[[dict[str, Any], list[dict]], None],
          on_problem: Callable[[str], None] = lambda line: None,
          plan: PlanSettings | None = None, plan_out: str | Path | None = None,
          until_step: int | None = None, until_idle: float | None = None,
          poll: float = POLL_SECONDS, window: int = STATE_WINDOW,
          horizon: int = REPLAN_INTERVAL,
          stall_steps: int = STALL_STEPS,
          sleep: Callable[[float], None] = time.sleep) -> WatchResult:
    """Follow the recording under ``root`` until ``until_step`` is merged, ``until_idle``
    seconds pass without new data, or Ctrl-C. ``on_update(snapshot, events)`` after each
    block of merged steps; ``on_problem(line)`` once per unreadable file or stalled rank.
    ``window`` is the online detector's state window; ``horizon`` the steps each forecast
    covers, a quarter of it apart (with ``plan``: its re-plan interval). With ``plan`` and
    ``plan_out``, each re-plan is written to ``plan_out`` atomically (the plan document of
    moetrace.placement.document, with its ``plan_version``)."""
    follower, merger = Follower(root), Merger(stall_steps=stall_steps)
    state: WatchState | None = None
    updates, problems = 0, []
    idle_since = time.monotonic()
    try:
        while True:
            parts, issues = follower.poll()
            merged, events = merger.add(parts)
            for issue in issues + events:
                problems.append(issue)
                on_problem(issue)
            if parts:
                idle_since = time.monotonic()
            if merged is not None:
                steps, counts = merged
                if state is None:
                    top_k = next((p.top_k for p in parts if p.top_k), None) or 1
                    state = WatchState(counts.shape[0], counts.shape[2], top_k=top_k,
                                       window=window, plan=plan,
                                       horizon=plan.replan_interval if plan else horizon)
                changes = state.update(steps, counts)
                if state.pending_plan is not None and plan_out is not None:
                    _write_plan(plan_out, state.pending_plan.document(
                        str(root), plan_version=state.plan_version), root)
                    state.pending_plan = None
                updates += 1
                on_update(state.snapshot(), changes)
                if until_step is not None and state.last_step >= until_step:
                    return WatchResult(state, updates, "until-step", problems)
            if until_idle is not None and time.monotonic() - idle_since >= until_idle:
                return WatchResult(state, updates, "until-idle", problems)
            if not parts:
                sleep(poll)
    except KeyboardInterrupt:
        return WatchResult(state, updates, "interrupted", problems)


def _write_plan(path: str | Path, document: dict, root: str | Path) -> None:
    with write_file(Path(path), inputs=[root], force=True) as tmp:
        tmp.write_text(dumps(document))
