"""The report's first screen: per state and horizon, which predictor to trust and by how much.

Everything here is computed from the backtest and its result rows, and goes into report.json
(``bottom_line``, ``notes``) before any rendering, so the Markdown, the HTML and the terminal
say the same thing.

* **Best** is the lowest median (across origins) of the per-origin error rate. It **wins**
  against another predictor when it is better at no fewer than :data:`WIN_SHARE` of the
  origins where both were scored; otherwise the two are called a **tie**: the difference is
  inside the spread across origins.
* **Gain over naive**: 1 - best / naive (medians). **Times the reference**: the best error
  over the higher of the noise floor and the look-ahead bound (docs/metrics.md): 1.0 means
  no forecaster can be expected to do better on this trace.
* **Notes**: a predictor of the run whose error is more than :data:`WORSE_THAN_NAIVE` times
  naive's in some state and horizon is named with the reason, and every fallback (a
  predictor that forecast with a simpler rule, and why) is counted.
"""

from __future__ import annotations

import numpy as np

from moetrace.backtest import BacktestResult
from moetrace.report.results import (
    STATES,
    Row,
    find,
    per_origin_error,
    per_origin_reference,
)

WIN_SHARE = 0.8
WORSE_THAN_NAIVE = 1.25

#: Why a predictor can do worse than naive, for the ones moetrace ships.
REASONS = {
    "sw_avg": "its fixed window (1,000 steps, the paper's) averages shares from up to a window "
              "back: stale where the shares drift, and for hundreds of steps after a layer "
              "settles; auto bounds its windows by the stable onset",
    "arima": "it extrapolates bucket-to-bucket dynamics fitted on the last 4,000 steps, which "
             "a change of state or of the drift leaves behind",
    "lstm": "it is trained on this trace's own history, which on a short or sampled trace is "
            "little data for a model of every expert of every layer",
    "drift": "its trend, fitted on the last 500 steps, is extrapolated (damped) over the "
             "horizon: a turn of the drift after the origin costs it",
    "auto": "its inner evaluation chooses among rules on the history just before the origin, "
            "which a change after the origin can prove wrong",
}


def bottom_line(result: BacktestResult, rows: list[Row],
                floors: dict[str, np.ndarray] | None = None) -> list[dict]:
    """One entry per (horizon, state) that has origins, in the report's reading order. The
    reference and "times reference" are medians across origins too (per-origin layer means
    of the higher reference), so the error and its reference are measured alike."""
    out = []
    for h in result.horizons:
        for state in ("stable", "transient", "all"):
            medians = {}
            for name in result.predictors:
                row = find(rows, predictor=name, horizon=h, state=state)
                if row is not None and row.error_rate_median is not None:
                    medians[name] = row
            if not medians:
                continue
            best = min(medians, key=lambda n: medians[n].error_rate_median)
            row = medians[best]
            errors = {n: per_origin_error(result, n, h, state) for n in medians}
            ties, wins = [], {}
            for other in medians:
                if other == best:
                    continue
                both = np.isfinite(errors[best]) & np.isfinite(errors[other])
                share = float(np.mean(errors[best][both] < errors[other][both])) \
                    if both.any() else 0.0
                wins[other] = share
                if share < WIN_SHARE:
                    ties.append(other)
            naive = medians.get("naive")
            per_ref = per_origin_reference(result, h, state, floors)
            ratio = errors[best] / per_ref
            reference = _median(per_ref)
            out.append({
                "horizon": h, "state": state, "best": best, "ties": ties,
                "wins": wins, "origins": row.origins,
                "error_rate_median": row.error_rate_median,
                "error_rate_p10": row.error_rate_p10, "error_rate_p90": row.error_rate_p90,
                "error_rate_mean": row.error_rate, "window_error": row.window_error,
                "noise_floor": row.noise_floor, "lookahead": row.lookahead,
                "reference": reference,
                "times_reference": _median(ratio),
                "naive_median": None if naive is None else naive.error_rate_median,
                "gain_over_naive": None if naive is None or not naive.error_rate_median else
                1.0 - row.error_rate_median / naive.error_rate_median,
            })
    return out


def notes(result: BacktestResult, rows: list[Row]) -> list[dict]:
    """Predictors worse than WORSE_THAN_NAIVE x naive (where, and why), and fallbacks."""
    out = []
    for name in result.predictors:
        if name == "naive":
            continue
        worse = []
        for h in result.horizons:
            for state in STATES:
                mine = find(rows, predictor=name, horizon=h, state=state)
                naive = find(rows, predictor="naive", horizon=h, state=state)
                if mine and naive and naive.error_rate and \
                        mine.error_rate > WORSE_THAN_NAIVE * naive.error_rate:
                    worse.append({"horizon": h, "state": state,
                                  "times_naive": mine.error_rate / naive.error_rate})
        reasons = [r for r in result.fallbacks.get(name, []) if r]
        if not worse and not reasons:
            continue
        out.append({
            "predictor": name, "worse_than_naive": worse,
            "reason": REASONS.get(name, "see docs/predictors.md") if worse else None,
            "fallbacks": len(reasons), "fits": len(result.fallbacks.get(name, [])),
            "fallback_reasons": sorted(set(reasons)),
        })
    return out


def _median(values: np.ndarray) -> float | None:
    finite = values[np.isfinite(values)]
    return float(np.median(finite)) if finite.size else None
