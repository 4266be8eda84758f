"""The report's first screen: the headline, and per horizon and state which predictor to use.

Everything here is computed from the backtest and its result rows, and goes into report.json
(``headline``, ``recommendation``, ``bottom_line``, ``notes``) before any rendering, so the
terminal, the Markdown and the HTML say the same thing.

* **Bottom line** (per horizon and state, a *cell*): the predictors are compared on the same
  (origin, layer) pairs with moetrace.evidence. Below its minimum evidence (5 origins, 10
  pairs) a cell names no best. Otherwise the best is the predictor with the lowest centre
  (the mean over origins of the layer-mean error rate) among those that made their own
  forecasts at no fewer than half the cell's origins (:data:`MAX_FALLBACK`), and every other
  predictor gets a paired verdict against it: "better", "no clear difference" or "worse".
* **Recommendation**: the predictor that is the best, or not clearly behind it, in the most
  ranked cells (ties: the most clear wins); the headline says it in one sentence, with what
  re-planning the placement from its forecasts would buy in modeled MoE step time (the
  report's placement replay).
* **Notes**: a predictor clearly worse than naive somewhere (where, and the usual reason), and
  each reason a predictor fell back, once, with the number of origins.
"""

from __future__ import annotations

import re
from collections import Counter

import numpy as np

from moetrace.backtest import BacktestResult
from moetrace.evidence import (BETTER, MIN_ORIGINS, MIN_PAIRS, NO_CLEAR_DIFFERENCE, TOO_FEW, WORSE,
                               compare, estimate, rank)
from moetrace.report.results import STATES, Row, find

#: A predictor that fell back at more than this share of a cell's origins cannot be its best.
MAX_FALLBACK = 0.5

#: Why a predictor can do worse than naive, for the ones moetrace ships.
REASONS = {
    "sw_avg": "its fixed window (1,000 steps, the paper's) averages shares from up to a window "
              "back: stale where the shares drift, and for hundreds of steps after a layer "
              "settles; auto bounds its windows by the stable onset",
    "arima": "it extrapolates bucket-to-bucket dynamics fitted on the last 4,000 steps, which "
             "a change of state or of the drift leaves behind",
    "lstm": "it learns from this trace's own history (one model shared by every expert "
            "series): a level under slow drift and noise leaves it little beyond the level "
            "to learn, and a change after the origin is one it has not seen",
    "drift": "its trend, fitted on the last 500 steps, is extrapolated (damped) over the "
             "horizon: a turn of the drift after the origin costs it",
    "auto": "its inner evaluation chooses among rules on the history just before the origin, "
            "which a change after the origin can prove wrong",
}

_READING_ORDER = ("stable", "transient", "all")


def _cell(result: BacktestResult, h: int, state: str) -> np.ndarray:
    """(N, L) the pairs of one cell: layers in ``state`` at origins where ``h`` fits."""
    fits = result.scores[(result.predictors[0], h)].fits
    return result.state_masks()[state] & fits[:, None]


def bottom_line(result: BacktestResult, rows: list[Row],
                floors: dict[str, np.ndarray] | None = None) -> list[dict]:
    """One entry per (horizon, state) with scored pairs, in the report's reading order
    (schema: docs/report.md). The error and references of a ranked cell are its best's row
    (same pairs, same centre); of a cell without a best, the references over its pairs."""
    out = []
    masks = result.state_masks()
    for h in result.horizons:
        for state in _READING_ORDER:
            if state not in masks:
                continue
            cell = _cell(result, h, state)
            errors = {n: result.scores[(n, h)].metrics["error_rate"] for n in result.predictors
                      if find(rows, predictor=n, horizon=h, state=state) is not None}
            if not errors:
                continue
            origins = int(cell.any(axis=1).sum())
            fell_back = {n: int(result.fell_back(n)[cell.any(axis=1)].sum()) for n in errors}
            allowed = {n for n in errors if fell_back[n] <= MAX_FALLBACK * origins}
            ranking = rank(errors, cell, eligible=allowed, steps=result.origins, horizon=h)
            best = find(rows, predictor=ranking.best, horizon=h, state=state) \
                if ranking.best else None
            naive = find(rows, predictor="naive", horizon=h, state=state)
            refs = _references(result, h, state, cell, floors) if best is None else \
                {k: getattr(best, k) for k in ("constant_bound", "noise_floor", "lookahead")}
            out.append({
                "horizon": h, "state": state, "ranked": ranking.ranked,
                "origins": ranking.origins, "pairs": ranking.pairs, "best": ranking.best,
                "error_rate": None if best is None else best.error_rate,
                "error_rate_lower": None if best is None else best.error_rate_lower,
                "error_rate_upper": None if best is None else best.error_rate_upper,
                "window_error": None if best is None else best.window_error,
                **refs,
                "verdicts": ranking.verdicts,
                "differences": {n: {"mean_difference": _float(c.mean_difference),
                                    "lower": _float(c.lower), "upper": _float(c.upper),
                                    "origins": c.origins, "pairs": c.pairs}
                                for n, c in ranking.comparisons.items()},
                "fell_back": fell_back,
                "cannot_be_best": sorted(set(errors) - allowed),
                "reason": ranking.reason,
                "naive_error_rate": None if naive is None else naive.error_rate,
                "gain_over_naive": None if best is None or naive is None
                or not naive.error_rate else 1.0 - best.error_rate / naive.error_rate,
            })
    return out


def _references(result: BacktestResult, h: int, state: str, cell: np.ndarray,
                floors: dict[str, np.ndarray] | None) -> dict:
    """The references over a cell's pairs, with the rows' centre."""
    floor = None if not floors or state not in floors else \
        np.broadcast_to(floors[state], cell.shape)
    found = {"constant_bound": result.constant_bound.get(h),
             "lookahead": result.lookahead.get(h), "noise_floor": floor}
    return {k: None if v is None else _float(estimate(v, cell).centre) for k, v in found.items()}


def _float(value) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None


def recommendation(bottom: list[dict], placement: dict | None,
                   first_predictor: str | None = None) -> dict:
    """The predictor to use for the run and the evidence for it, and what re-planning the
    placement from forecasts buys in modeled MoE step time (None: no replay). The predictor
    is the one that is the best, or has no clear difference from it, in the most ranked cells
    (then: the most clear wins, a cell's best counting one per predictor clearly worse than
    it; then: best in the most; then: the lower error in the first ranked cell). ``ahead_of``
    counts, per other predictor, the ranked cells in which the chosen one is clearly better."""
    ranked = [b for b in bottom if b["ranked"]]
    level, wins, best_in = Counter(), Counter(), Counter()
    for b in ranked:
        best_in[b["best"]] += 1
        level[b["best"]] += 1
        wins[b["best"]] += sum(v == WORSE for v in b["verdicts"].values())
        for name, verdict in b["verdicts"].items():
            if verdict != WORSE and name not in b["cannot_be_best"]:
                level[name] += 1
    chosen = None
    if ranked:
        first = ranked[0]
        order = [first["best"], *first["verdicts"]]
        chosen = max(level, key=lambda n: (level[n], wins[n], best_in[n],
                                           -order.index(n) if n in order else -len(order)))
    others = [n for n in dict.fromkeys(n for b in ranked for n in b["fell_back"])
              if chosen and n != chosen]
    ahead = {o: sum(1 for b in ranked
                    if (b["best"] == chosen and b["verdicts"].get(o) == WORSE)
                    or (b["best"] == o and b["verdicts"].get(chosen) == BETTER))
             for o in others}
    return {"predictor": chosen, "ranked_cells": len(ranked), "cells": len(bottom),
            "best_or_level": level.get(chosen, 0), "best": best_in.get(chosen, 0),
            "ahead_of": ahead,
            "placement": placement_gain(placement, first_predictor)}


def placement_gain(placement: dict | None, predictor: str | None = None) -> dict | None:
    """Modeled MoE step time of the forecast policy against the static placement and against
    window re-planning at the same cadence (the replay's rows over all layers and steps);
    None where the report has no replay. A later model of seconds belongs here too."""
    if not placement or placement.get("skipped") or not placement.get("results"):
        return None
    times = {r["policy"]: r["time_vs_balanced"] for r in placement["results"]
             if r["layer"] is None and r["state"] == "all"}
    if not {"forecast", "static", "window"} <= times.keys():
        return None
    forecast = times["forecast"]
    return {"policy": "forecast", "interval": placement["interval"],
            "predictor": placement.get("predictors", {}).get("forecast", predictor),
            "time_vs_balanced": {k: times[k] for k in ("forecast", "static", "window")},
            "saving_vs_static": 1.0 - forecast / times["static"],
            "saving_vs_window": 1.0 - forecast / times["window"]}


def headline(recommended: dict, bottom: list[dict], placement: dict | None) -> str:
    """The report's first sentence, plain text: which predictor to use and how sure that is,
    and what placement re-planning buys against the static placement and against window
    re-planning at the same cadence."""
    name = recommended["predictor"]
    if name is None:
        if not bottom:
            why = "no horizon and state could be scored"
        elif all(b["reason"] and b["reason"].startswith(TOO_FEW) for b in bottom):
            why = (f"no horizon and state has enough origins to rank the predictors (at most "
                   f"{max(b['origins'] for b in bottom)} origins and "
                   f"{max(b['pairs'] for b in bottom)} (origin, layer) pairs; it takes "
                   f"{MIN_ORIGINS} and {MIN_PAIRS})")
        else:
            why = "no predictor made its own forecasts at half the origins of any horizon " \
                  "and state with enough origins to rank"
        first = f"No predictor can be recommended for this run: {why}"
    else:
        n, level = recommended["ranked_cells"], recommended["best_or_level"]
        ahead = recommended["ahead_of"]
        everywhere = "" if n == 1 else " in both" if n == 2 else f" in all {n}"
        counts = sorted({k for k in ahead.values() if k}, reverse=True)
        items = [_join([o for o, j in ahead.items() if j == k])
                 + (everywhere if k == n else f" in {k}") for k in counts]
        never = [o for o, k in ahead.items() if not k]
        clause = f", clearly ahead of {' and of '.join(items)}" if items else ""
        if never:
            clause += (f" but not of {_join(never, 'or')}" if items else
                       f", not clearly ahead of {_join(never, 'or')}")
        first = (f"Use {name}: it is best or level with the best in {level} of the "
                 f"{_cells(n)} with enough origins to rank{clause}")
    return first + _placement_clause(recommended["placement"], placement) + "."


def _join(items: list[str], last: str = "and") -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} {last} {items[-1]}"


def _cells(n: int) -> str:
    return f"{n} cell" if n == 1 else f"{n} cells"


def _placement_clause(gain: dict | None, placement: dict | None) -> str:
    if gain is None:
        if placement and placement.get("skipped"):
            return f"; placement was {placement['skipped']}"
        return ""
    t = gain["time_vs_balanced"]
    return (f"; re-planning the placement every {gain['interval']:,} steps from "
            f"{gain['predictor']}'s forecast models the MoE step "
            f"{_shorter(gain['saving_vs_static'])} the static placement and "
            f"{_shorter(gain['saving_vs_window'])} window re-planning at the same cadence "
            f"({t['forecast']:.2f}x a balanced step, against {t['static']:.2f}x and "
            f"{t['window']:.2f}x)")


def _shorter(saving: float) -> str:
    if abs(saving) < 0.005:
        return "as long as"
    return f"{abs(saving) * 100:.0f}% {'shorter' if saving > 0 else 'longer'} than"


def notes(result: BacktestResult, rows: list[Row]) -> list[dict]:
    """Per predictor: the cells where it is clearly worse than naive (paired verdict), with
    the usual reason, and each reason it fell back with the number of origins."""
    out = []
    states = [s for s in STATES if s in result.state_masks()]
    for name in result.predictors:
        worse = []
        if name != "naive" and "naive" in result.predictors:
            for h in result.horizons:
                for state in states:
                    mine = find(rows, predictor=name, horizon=h, state=state)
                    naive = find(rows, predictor="naive", horizon=h, state=state)
                    if not mine or not naive:
                        continue
                    c = compare(result.scores[(name, h)].metrics["error_rate"],
                                result.scores[("naive", h)].metrics["error_rate"],
                                _cell(result, h, state), steps=result.origins, horizon=h)
                    if c.verdict == WORSE:
                        worse.append({"horizon": h, "state": state,
                                      "mean_difference": _float(c.mean_difference),
                                      "lower": _float(c.lower), "upper": _float(c.upper)})
        reasons = grouped_reasons(result.origins, result.fallbacks.get(name, []))
        if not worse and not reasons:
            continue
        out.append({
            "predictor": name, "worse_than_naive": worse,
            "reason": REASONS.get(name, "see docs/predictors.md") if worse else None,
            "fallbacks": [{"reason": r, "origins": len(steps)} for r, steps in reasons],
            "of": len(result.fallbacks.get(name, [])),
        })
    return out


def grouped_reasons(origins: np.ndarray, reasons: list[str | None]
                    ) -> list[tuple[str, list[int]]]:
    """Each reason a predictor fell back once, with the origin steps it applies to. Reasons
    that differ only in their numbers (the history length at each origin) are one reason,
    given as it reads at the last of its origins."""
    groups: dict[str, tuple[str, list[int]]] = {}
    for t, reason in zip(origins, reasons):
        if reason:
            key = re.sub(r"\d[\d,.]*", "#", reason)
            steps = groups.get(key, (reason, []))[1]
            groups[key] = (reason, [*steps, int(t)])
    return list(groups.values())


def fallback_record(result: BacktestResult) -> dict[str, list[dict]]:
    """report.json ``fallbacks``: per predictor, each reason once (:func:`grouped_reasons`)
    with the origin steps it applies to."""
    return {name: [{"reason": r, "origins": steps}
                   for r, steps in grouped_reasons(result.origins, reasons)]
            for name, reasons in result.fallbacks.items()}
