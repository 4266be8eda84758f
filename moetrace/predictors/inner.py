"""Inner rolling-origin evaluation: how a forecasting rule did on the history's own past.

A predictor that chooses between rules (``auto``), tunes one (``drift``) or states how far
its forecast can be trusted (forecast intervals, expected error) asks the same question of
the history it is given: had this rule been used at earlier origins, how wrong would it have
been over the horizon that followed? Everything here sees only the history: the inner
origins are chosen so that every horizon they score ends at or before its last bucket.

Series are bucket means ``(L, n, E)`` (moetrace/predictors/buckets.py). A *rule* maps the
buckets up to and including an inner origin to a forecast of the next ``k`` buckets,
``(L, k, E)``; rules are plain functions, vectorised over layers and experts.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from moetrace.metrics import error_rate

#: rule(buckets up to an origin (L, m, E), k) -> forecast of the next k buckets (L, k, E)
Rule = Callable[[np.ndarray, int], np.ndarray]

#: inner origins used at most (more only cost time: the choice is already stable)
ORIGINS = 8
#: positions, evenly spaced from the oldest inner origin to the history's end, at which
#: :func:`decay` measures a layer's movement to fit its trend
TREND_POSITIONS = 16
#: the weight of that trend in :func:`decay`'s log-ratio, against the ratio measured at the
#: origin alone (chosen among 1, 0.75 and 0.5 on the docs' traces: docs/predictors.md)
TREND_WEIGHT = 0.5


def inner_origins(n: int, k: int, count: int = ORIGINS, min_history: int = 2) -> np.ndarray:
    """Positions (number of buckets seen) of up to ``count`` inner origins whose k-bucket
    horizon ends within ``n`` buckets, newest first, spaced by k // 4 (at least 1): the
    recent past, where the layer behaves most like it will next."""
    last = n - k
    if last < min_history:
        return np.empty(0, dtype=np.int64)
    stride = max(1, k // 4)
    origins = np.arange(last, min_history - 1, -stride)[:count]
    return origins.astype(np.int64)


def valid_origins(origins: np.ndarray, start: np.ndarray | None) -> np.ndarray:
    """(O, L) which inner origins speak for each layer now: for a layer that became stable
    at bucket ``start[l]`` (>= 0), only origins after it (its transient past says nothing
    about its stable present); every origin for a transient layer (start -1)."""
    if start is None:
        return np.ones((len(origins), 1), dtype=bool)
    return (start[None, :] < 0) | (origins[:, None] > start[None, :])


def evaluate(rules: list[Rule], buckets: np.ndarray, origins: np.ndarray,
             k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every rule at every inner origin: (C, O, L) bucket-level errors, the mean over the k
    horizon buckets of sum_e |forecast - actual|, which rank rules by how well they follow
    the shares (per-step sampling noise is the same for every rule and averages out of
    bucket means); (C, O, L, E) each rule's mean forecast over the horizon; and (O, L, E)
    the actual mean share over it."""
    errors = np.empty((len(rules), len(origins), buckets.shape[0]))
    means = np.empty((len(rules), len(origins), buckets.shape[0], buckets.shape[2]))
    actual = np.empty((len(origins), buckets.shape[0], buckets.shape[2]))
    for i, o in enumerate(origins):
        ahead = buckets[:, o:o + k]
        actual[i] = ahead.mean(axis=1)
        past = buckets[:, :o]
        for c, rule in enumerate(rules):
            forecast = rule(past, k)
            errors[c, i] = error_rate(forecast, ahead)
            means[c, i] = forecast.mean(axis=1)
    return errors, means, actual


def mean_residuals(rule: Rule, buckets: np.ndarray, origins: np.ndarray,
                   k: int) -> tuple[np.ndarray, np.ndarray]:
    """(O, L, E) forecast and actual mean share over each inner origin's horizon."""
    forecasts = np.empty((len(origins),) + buckets.shape[::2])
    actuals = np.empty_like(forecasts)
    for i, o in enumerate(origins):
        forecasts[i] = rule(buckets[:, :o], k).mean(axis=1)
        actuals[i] = buckets[:, o:o + k].mean(axis=1)
    return forecasts, actuals


def binomial_scale(f: np.ndarray) -> np.ndarray:
    """sqrt(f (1 - f)): the scale a share's residual is measured in (a hot expert's mean share
    moves more than a cold one's), never 0."""
    return np.sqrt(np.clip(f * (1.0 - f), 1e-12, None))


def score_quantiles(scores: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Per row of ``scores`` (L, N) (NaN: no score), its (1 - level) / 2 and (1 + level) / 2
    quantiles, interpolated; NaN for a row without scores. No finite-sample correction: the
    scores of one layer are correlated (its experts share the layer's drift, neighbouring
    inner horizons overlap), so the correction's guarantee does not hold for them, while
    its widening (to the largest score of 16 or fewer) does."""
    tail = (1.0 - level) / 2.0
    lo = np.full(scores.shape[0], np.nan)
    hi = np.full(scores.shape[0], np.nan)
    known = np.isfinite(scores).any(axis=1)
    if known.any():
        lo[known], hi[known] = np.nanquantile(scores[known], [tail, 1.0 - tail], axis=1)
    return lo, hi


def conformal_interval(forecast: np.ndarray, past_forecast: np.ndarray,
                       past_actual: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Per layer and expert, bounds of the mean share over the horizon around ``forecast``
    (L, E) that hold the actual with probability ``level``, split-conformal from the past
    (O, L, E) forecasts and actuals of the same rule.

    The nonconformity score is the residual over the share's binomial scale
    (:func:`binomial_scale`), pooled over the inner origins and the layer's experts (so a
    layer of 128 experts and 8 origins has 1,024 scores); the bounds are its quantiles
    (:func:`score_quantiles`), scaled back per expert and clipped to [0, 1]."""
    scores = (past_actual - past_forecast) / binomial_scale(past_forecast)  # NaN: unused
    lo, hi = score_quantiles(scores.transpose(1, 0, 2).reshape(scores.shape[1], -1), level)
    return bounds(forecast, lo, hi)


def bounds(forecast: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray,
                                                                         np.ndarray]:
    """(L, E) bounds ``forecast`` + (L,) score quantiles times each expert's scale, clipped
    to [0, 1] (NaN for a layer without quantiles: no past error to learn from)."""
    s = binomial_scale(forecast)
    return (np.clip(forecast + lo[:, None] * s, 0.0, 1.0),
            np.clip(forecast + hi[:, None] * s, 0.0, 1.0))


def movement(buckets: np.ndarray, positions: np.ndarray, w: int,
             start: np.ndarray) -> np.ndarray:
    """(P, L) how much each layer's shares moved just before each position (buckets seen):
    the median over experts of |mean of the last w buckets - mean of the w before| on the
    binomial scale; NaN where the 2w buckets do not fit, or reach back before a stable
    layer's onset ``start`` (-1: transient, no limit)."""
    out = np.full((len(positions), buckets.shape[0]), np.nan)
    fits = positions[positions - 2 * w >= 0]
    if len(fits) == 0:
        return out
    # the running sum over the span the positions read, not the whole history
    lo = int(fits.min()) - 2 * w
    cum = np.concatenate([np.zeros_like(buckets[:, :1]),
                          np.cumsum(buckets[:, lo:int(fits.max())], axis=1)], axis=1)
    for i, x in enumerate(positions):
        if x - 2 * w < 0:
            continue
        at = x - lo  # x in the running sum
        recent = (cum[:, at] - cum[:, at - w]) / w
        before = (cum[:, at - w] - cum[:, at - 2 * w]) / w
        g = np.median(np.abs(recent - before) / binomial_scale(recent), axis=1)
        out[i] = np.where((x - 2 * w >= np.maximum(start, 0)) & (g > 0), g, np.nan)
    return out


def decay(buckets: np.ndarray, origins: np.ndarray, w: int, start: np.ndarray,
          cap: float = 4.0, transient_cap: float = 32.0) -> np.ndarray:
    """(O, L) how much larger a residual made at each inner origin would be made now, from
    how much the shares moved just before (:func:`movement`, lag w). Per layer, the log of
    the factor averages (weight :data:`TREND_WEIGHT`) two estimates of the same thing: the
    log-ratio of its movement now to its movement at the origin, and its trend's, the
    least-squares slope of log movement over :data:`TREND_POSITIONS` positions from the oldest
    origin to now times the distance (:func:`movement_trend`; where the trend cannot be
    fitted, the ratio alone; where only the ratio is unknown, 1 in its place). The ratio
    alone is noisy (two measurements of a median over experts), the trend alone assumes a
    steady slowing. A stable layer's (``start`` >= 0) factor is bounded by ``cap`` either
    way; a transient layer's by ``transient_cap`` (a layer that has just settled, which the
    online detector confirms only later, moves a tenth as much as in its transient), and at
    an origin before which w does not fit it is the ratio alone, taken at a shorter lag
    (half the origin's buckets). Each layer's factor is its own, so a forecast of a
    chunk of layers is that of the whole trace (moetrace/scale).

    On real training the shares' drift slows for thousands of steps after the transient
    (SmartMoE's real trace: the error of a 100-step mean over the next 1,000 steps halves
    about every 1,000 steps), so the past residuals an interval is calibrated from overstate
    today's; a stationary trace gives factors around 1."""
    n = buckets.shape[1]
    g = movement(buckets, np.r_[n, origins], w, start)
    ratio = np.log(g[:1]) - np.log(g[1:])  # (O, L)
    slope = movement_trend(buckets, origins, w, start)  # (L,)
    trend = slope[None, :] * (n - origins[:, None])
    ratio = np.where(np.isfinite(trend), TREND_WEIGHT * trend +
                     (1.0 - TREND_WEIGHT) * np.nan_to_num(ratio, nan=0.0), ratio)
    stable = start >= 0
    lags = np.maximum(1, np.minimum(w, origins // 2))  # a transient layer: a shorter lag
    for lag in np.unique(lags[lags < w]):  # where w does not fit before the origin
        at = lags == lag
        g = movement(buckets, np.r_[n, origins[at]], int(lag), start)
        ratio[at] = np.where(stable[None, :], ratio[at], np.log(g[:1]) - np.log(g[1:]))
    bound = np.where(stable, np.log(cap), np.log(transient_cap))[None, :]
    return np.exp(np.clip(np.nan_to_num(ratio, nan=0.0), -bound, bound))


def movement_trend(buckets: np.ndarray, origins: np.ndarray, w: int,
                   start: np.ndarray) -> np.ndarray:
    """(L,) per layer the least-squares slope, per bucket, of the log of its movement
    (:func:`movement`, lag w) at :data:`TREND_POSITIONS` positions evenly spaced from the
    oldest of ``origins`` (at least 2w) to the history's end; NaN for a layer with fewer
    than 3 positions where its movement is known (a stable layer's only after its onset)."""
    n = buckets.shape[1]
    out = np.full(buckets.shape[0], np.nan)
    if len(origins) == 0:
        return out
    first = max(2 * w, int(origins.min()))
    positions = np.unique(np.linspace(first, n, TREND_POSITIONS).astype(np.int64))
    if first >= n or len(positions) < 3:
        return out
    y = np.log(movement(buckets, positions, w, start))  # (P, L), never log 0 (movement > 0)
    known = np.isfinite(y)
    count = known.sum(axis=0)
    x = np.where(known, positions[:, None].astype(np.float64), 0.0)
    fit = count >= 3
    mx = x.sum(axis=0)[fit] / count[fit]
    my = np.where(known, y, 0.0).sum(axis=0)[fit] / count[fit]
    dx = np.where(known[:, fit], positions[:, None] - mx, 0.0)
    dy = np.where(known[:, fit], y[:, fit] - my, 0.0)
    out[fit] = (dx * dy).sum(axis=0) / (dx * dx).sum(axis=0)  # > 0: 3 distinct positions
    return out


def expected_step_error(residuals: np.ndarray, recent: np.ndarray) -> np.ndarray:
    """(L,) expected per-step error rate of a forecast whose error of the mean share over
    the horizon is distributed as the rows of ``residuals`` (O, L, E; NaN: none) and whose
    steps scatter around that mean as the rows of ``recent`` (L, R, E: the history's last
    steps minus their mean): the mean over residuals and steps of sum_e |r - n|."""
    out = np.zeros(residuals.shape[1])
    count = np.zeros(residuals.shape[1])
    for r in residuals:
        known = np.isfinite(r).all(axis=1)
        if known.any():
            err = np.abs(np.nan_to_num(r)[:, None, :] - recent).sum(axis=-1).mean(axis=1)
            out += np.where(known, err, 0.0)
            count += known
    with np.errstate(invalid="ignore"):
        return np.where(count > 0, out / np.maximum(count, 1), np.nan)


def rule_scores(errors: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
    """(C, O, L) inner errors (:func:`evaluate`) -> (C, L) what ranks the rules for each
    layer: the geometric mean of a rule's errors over the layer's valid inner origins (NaN
    for a layer with none).

    The mean of the logs, not of the errors: each origin weighs by how a rule's error
    compares with the other rules' there, not by its size. A layer's oldest inner origins
    are often in its early, fast-moving past, where every rule errs several times more than
    now; an arithmetic mean lets those few origins choose the rules (short windows, which
    follow fast moves) for a present that has calmed down (demo-sampled's layer 0: errors of
    35-87% at the two oldest origins against 12-19% at the newest five)."""
    logs = np.log(np.maximum(errors, np.finfo(np.float64).tiny))
    return np.exp(np.stack([masked_mean(e, valid) for e in logs]))


def masked_mean(values: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
    """(O, L) -> (L,) mean over the valid origins (NaN for a layer with none)."""
    if valid is None:
        return values.mean(axis=0)
    valid = np.broadcast_to(valid, values.shape)
    count = valid.sum(axis=0)
    with np.errstate(invalid="ignore"):
        return np.where(count > 0, np.where(valid, values, 0.0).sum(axis=0) /
                        np.maximum(count, 1), np.nan)
