"""The one rule for what a trace is too short for, shared by every command.

Every number of steps a command uses has a default made for long training runs (a state
window of 100 steps, 1,000 steps of history, horizons of 1,000 and 2,000 steps, plans held
for 1,000 steps from a 1,000-step window). On a shorter trace:

1. a default the trace has no room for **shrinks** to fit, and a note says so (an option the
   user gave never shrinks: it is refused with what would fit);
2. nothing shrinks below its **floor**: a state window holds at least
   :data:`MIN_WINDOW_SAMPLES` samples, and every span of steps that states are told apart
   in, histories are fitted on, or horizons and plans are scored over holds at least one
   state window;
3. a trace with no room for the floors is refused, in one line that says what the command
   needs: a state analysis needs :data:`MIN_WINDOWS` state windows, a backtest a history of
   that length plus one horizon, a placement replay that history plus one re-plan interval.

So ``analyze``, ``predict``, ``report``, ``plan`` and ``simulate`` refuse the same traces and
say why in the same words (docs/cli.md, "Short traces").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from moetrace.defaults import HORIZONS, LOAD_WINDOW, MIN_HISTORY, REPLAN_INTERVAL, STATE_WINDOW
from moetrace.errors import ParameterError
from moetrace.trace.shares import Loads

#: the fewest samples a state window may hold: a windowed variance of fewer says nothing
MIN_WINDOW_SAMPLES = 10
#: state windows a trace must cover before its states can be told apart
MIN_WINDOWS = 4


@dataclass(frozen=True)
class Span:
    """The settings a command uses on one trace, after the rule above; ``notes`` say what
    was shrunk and what that means."""

    state_window: int
    min_history: int | None = None
    horizons: tuple[int, ...] | None = None
    replan_interval: int | None = None
    load_window: int | None = None
    notes: tuple[str, ...] = field(default=())


def _covers(axis: Loads) -> str:
    samples = f" ({axis.n_steps:,} samples, every {axis.interval:,} steps)" \
        if axis.interval > 1 else ""
    return f"the trace covers {axis.span:,} training steps{samples}"


def _floor(axis: Loads) -> int:
    """The smallest state window, in training steps."""
    return MIN_WINDOW_SAMPLES * axis.interval


def state_window(axis: Loads, given: int | None, *, command: str,
                 option: str = "--state-window") -> tuple[int, list[str]]:
    """The state window for ``axis`` (the trace's steps) and the notes on it."""
    floor = _floor(axis)
    need = MIN_WINDOWS * floor
    if axis.span < need:
        raise ParameterError(
            f"{_covers(axis)}; {command} needs at least {need:,} ({MIN_WINDOWS} state windows "
            f"of {MIN_WINDOW_SAMPLES} samples) to tell its states apart")
    if given is not None:
        if given < floor:
            raise ParameterError(f"{option} {given:,} holds fewer than {MIN_WINDOW_SAMPLES} "
                                 f"samples at this trace's sampling interval of "
                                 f"{axis.interval:,} steps; give at least {floor:,} steps")
        if MIN_WINDOWS * given > axis.span:
            raise ParameterError(f"{_covers(axis)}, fewer than {MIN_WINDOWS} state windows of "
                                 f"{given:,} steps; give {option} {axis.span // MIN_WINDOWS:,} "
                                 "or less")
        return int(given), []
    window = STATE_WINDOW
    if MIN_WINDOWS * window > axis.span:
        window = max(floor, axis.span // MIN_WINDOWS // axis.interval * axis.interval)
        return window, [f"the state window was shrunk to {window:,} steps ({_covers(axis)}): "
                        "states found in a short trace are uncertain"]
    return window, []


def analysis(axis: Loads, window: int | None, *, command: str = "analyze",
             option: str = "--state-window") -> Span:
    """What ``analyze`` (and any state labelling) uses: the state window alone."""
    w, notes = state_window(axis, window, command=command, option=option)
    return Span(w, notes=tuple(notes))


def forecasting(axis: Loads, *, command: str = "predict") -> Span:
    """What ``predict`` and ``plan`` need: room to tell the layers' states apart (the default
    predictor, auto, bounds its history by the online stable onset)."""
    return analysis(axis, None, command=command)


def backtest(axis: Loads, horizons: Sequence[int] | None, min_history: int | None,
             window: int | None) -> Span:
    """What ``report`` uses: the state window, the history before the first origin and the
    horizons, shrunk to a short trace as the module docstring says."""
    w, notes = state_window(axis, window, command="a backtest")
    span = axis.span
    need = 2 * w
    if span < need:
        raise ParameterError(f"{_covers(axis)}; a backtest needs at least {need:,}: a history "
                             f"of one state window ({w:,} steps) and a horizon of another")
    h = tuple(sorted({int(x) for x in (horizons or HORIZONS)}))
    if h[0] <= 0:
        raise ParameterError(f"--horizon takes positive numbers of steps, got {list(h)}")
    mh = MIN_HISTORY if min_history is None else int(min_history)
    if min_history is None and mh + max(h) > span:
        mh = max(w, min(mh, span // 2 // axis.interval * axis.interval))
        if mh != MIN_HISTORY:
            notes.append(f"{_covers(axis)}, too few for the default {MIN_HISTORY:,} steps of "
                         f"history: {mh:,} were used")
    if horizons is None and mh + max(h) > span:
        room = span - mh
        shorter = max(w, room // 2 // axis.interval * axis.interval)
        h = tuple(sorted({shorter, max(w, room)}))
        notes.append(f"horizons of {', '.join(f'{x:,}' for x in h)} steps were used instead "
                     f"of {', '.join(f'{x:,}' for x in HORIZONS)}: errors over so few steps "
                     "say little about a placement held for thousands")
    return Span(w, min_history=mh, horizons=h, notes=tuple(notes))


def replay(axis: Loads, replan_interval: int | None, load_window: int | None,
           window: int | None = None) -> Span:
    """What ``simulate`` uses: the state window (the adaptive policy and the results by
    state need the states), the re-plan interval and the load window, shrunk alike."""
    w, notes = state_window(axis, window, command="a placement replay")
    for name, value in (("--replan-interval", replan_interval), ("--load-window", load_window)):
        if value is not None and value < 1:
            raise ParameterError(f"{name} must be a positive number of steps, got {value}")
    span = axis.span
    interval = REPLAN_INTERVAL if replan_interval is None else int(replan_interval)
    lw = LOAD_WINDOW if load_window is None else int(load_window)
    if span < 2 * w:
        raise ParameterError(f"{_covers(axis)}; a placement replay needs at least {2 * w:,}: a "
                             f"load window of one state window ({w:,} steps) and a re-plan "
                             "interval of another")
    if load_window is None and lw + interval > span:
        lw = max(w, min(lw, span // 2 // axis.interval * axis.interval))
    if replan_interval is None and lw + interval > span:
        interval = max(w, (span - lw) // 2 // axis.interval * axis.interval)
    if (lw, interval) != (LOAD_WINDOW if load_window is None else lw,
                          REPLAN_INTERVAL if replan_interval is None else interval):
        notes.append(f"{_covers(axis)}: plans were held for {interval:,} steps from a "
                     f"{lw:,}-step load window instead of {REPLAN_INTERVAL:,} and "
                     f"{LOAD_WINDOW:,}")
    if max(lw, interval) >= span:
        raise ParameterError(f"{_covers(axis)}, too few for a first re-plan after the "
                             f"{max(lw, interval):,}-step load window or re-plan interval; "
                             "give a smaller --load-window or --replan-interval")
    return Span(w, replan_interval=interval, load_window=lw, notes=tuple(notes))
