"""Paired evidence over rolling origins: one centre for an error, and verdicts that hold up.

Every function takes (origins, layers) arrays of per-pair values (an error rate of one
forecast, NaN where none was scored) and a boolean ``mask`` of the pairs that count (a state
of the layers, a horizon that fits). The **origin is the unit of evidence**: the layers of one
origin are forecast from the same history and move together, so they are averaged first, and
only the per-origin means are treated as observations.

- :func:`estimate` is the one centre of a quantity over a set of pairs: the mean over origins
  of the per-origin mean over the selected layers, with a confidence interval of that mean
  (symmetric, so the centre always lies inside it).
- :func:`compare` pairs two predictors on the same (origin, layer) pairs and gives the mean
  paired difference with its confidence interval; a difference counts only when the interval
  excludes zero.
- :func:`rank` does that for every predictor of a cell against the one with the lowest centre,
  and names no best below :data:`MIN_ORIGINS` origins or :data:`MIN_PAIRS` pairs.

The interval is a Diebold–Mariano-type one (docs/metrics.md, "Paired verdicts"): the
per-origin means' mean, plus or minus Student's t quantile (origins - 1 degrees of freedom)
times the standard error, whose variance is a Newey–West (Bartlett) estimate over origins that
includes the autocovariances of origins whose horizons overlap (``steps`` and ``horizon``
given; without them the origins are taken as independent). It is closed-form and
deterministic: no resampling, no seed.

Pure numpy (scipy only for the t quantile), no moetrace import: any layer may use it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

import numpy as np

#: Two-sided confidence level of every interval here.
LEVEL = 0.95
#: Below this many origins a cell names no best ("too few origins to rank").
MIN_ORIGINS = 5
#: ... or below this many (origin, layer) pairs.
MIN_PAIRS = 10
#: A predictor's verdict against another: its error is lower, not clearly different, higher.
BETTER, NO_CLEAR_DIFFERENCE, WORSE = "better", "no clear difference", "worse"
TOO_FEW = "too few origins to rank"


@dataclass(frozen=True)
class Estimate:
    """The centre of a quantity over a set of pairs and its confidence interval (NaN bounds
    with fewer than two origins: one origin says nothing about its own spread)."""

    centre: float
    lower: float
    upper: float
    origins: int
    pairs: int


@dataclass(frozen=True)
class Comparison:
    """A against B on their common pairs: the mean over origins of the per-origin mean of
    a - b, its confidence interval, and what that says about A (``verdict``: lower error is
    "better"). ``enough``: the common pairs reach :data:`MIN_ORIGINS` and :data:`MIN_PAIRS`;
    without enough, the verdict is "no clear difference" whatever the interval."""

    mean_difference: float
    lower: float
    upper: float
    origins: int
    pairs: int
    verdict: str
    enough: bool


@dataclass(frozen=True)
class Ranking:
    """The predictors of one cell against its best. ``ranked`` False: too few origins or pairs
    (``reason`` says so), or no predictor may be best; then ``best`` is None and ``verdicts``
    empty. ``verdicts[name]`` is what the comparison says about ``name`` against ``best``."""

    ranked: bool
    best: str | None
    origins: int
    pairs: int
    centres: dict[str, float]
    comparisons: dict[str, Comparison] = field(default_factory=dict)
    verdicts: dict[str, str] = field(default_factory=dict)
    reason: str | None = None


def origin_means(values: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N,) the mean over each origin's selected, finite pairs, and (N,) whether it has any
    (the origins that count)."""
    values = np.asarray(values, dtype=np.float64)
    keep = np.asarray(mask, dtype=bool) & np.isfinite(values)
    count = keep.sum(axis=1)
    total = np.where(keep, values, 0.0).sum(axis=1)
    used = count > 0
    return np.where(used, total / np.maximum(count, 1), np.nan), used


def enough(origins: int, pairs: int) -> bool:
    """Whether a cell holds the evidence to rank: :data:`MIN_ORIGINS` and :data:`MIN_PAIRS`."""
    return origins >= MIN_ORIGINS and pairs >= MIN_PAIRS


def overlap_lag(steps: np.ndarray, horizon: int) -> int:
    """The largest k such that some origin and the k-th origin after it have overlapping
    horizons (they are less than ``horizon`` steps apart): the autocovariances the variance
    must include. ``steps``: the origins' step numbers, increasing."""
    steps = np.asarray(steps, dtype=np.int64)
    if steps.size < 2:
        return 0
    reach = np.searchsorted(steps, steps + int(horizon), side="left")  # first origin >= t + H
    return int(max(0, (reach - np.arange(steps.size) - 1).max()))


def mean_interval(series: np.ndarray, lag: int = 0,
                  level: float = LEVEL) -> tuple[float, float, float]:
    """Mean of ``series`` (one value per origin, in time order) and its two-sided ``level``
    confidence interval: mean +- t(n-1) x sqrt(Newey-West variance / n), Bartlett weights up
    to ``lag``. NaN bounds for fewer than two values."""
    from scipy.special import stdtrit

    x = np.asarray(series, dtype=np.float64)
    n = x.size
    if n == 0:
        return np.nan, np.nan, np.nan
    mean = float(x.mean())
    if n < 2:
        return mean, np.nan, np.nan
    dev = x - mean
    total = float(dev @ dev)
    for k in range(1, min(int(lag), n - 1) + 1):
        total += 2.0 * (1.0 - k / (lag + 1.0)) * float(dev[:-k] @ dev[k:])
    variance = max(total, 0.0) / (n - 1)  # Bartlett weights keep it >= 0 up to rounding
    half = float(stdtrit(n - 1, 0.5 + level / 2.0)) * np.sqrt(variance / n)
    return mean, mean - half, mean + half


def _lag(used: np.ndarray, steps: np.ndarray | None, horizon: int | None) -> int:
    return 0 if steps is None or horizon is None else overlap_lag(np.asarray(steps)[used],
                                                                   horizon)


def estimate(values: np.ndarray, mask: np.ndarray, *, steps: np.ndarray | None = None,
             horizon: int | None = None, level: float = LEVEL,
             least: float | None = None) -> Estimate:
    """The centre of ``values`` over the masked, finite pairs: the mean over origins of the
    per-origin mean over layers, with its confidence interval (see :func:`mean_interval`;
    ``steps``, the (N,) origin steps, and ``horizon`` let it account for overlapping
    horizons; ``least``: the lowest value the quantity can take, 0 for an error, where the
    interval is cut). NaN centre where no pair counts."""
    means, used = origin_means(values, mask)
    pairs = int((np.asarray(mask, dtype=bool) & np.isfinite(values)).sum())
    centre, lower, upper = mean_interval(means[used], _lag(used, steps, horizon), level)
    if least is not None and lower < least:  # NaN stays NaN
        lower = least
    return Estimate(centre, lower, upper, int(used.sum()), pairs)


def compare(errors_a: np.ndarray, errors_b: np.ndarray, mask: np.ndarray, *,
            steps: np.ndarray | None = None, horizon: int | None = None,
            level: float = LEVEL) -> Comparison:
    """A against B on the pairs of ``mask`` where both were scored: the mean paired difference
    a - b (mean over origins of the per-origin layer mean, so on common pairs it is exactly
    the difference of the two centres), its confidence interval, and the verdict about A:
    "better" when the whole interval is below zero, "worse" when above, else "no clear
    difference" (also below the minimum evidence)."""
    a, b = np.asarray(errors_a, dtype=np.float64), np.asarray(errors_b, dtype=np.float64)
    common = np.asarray(mask, dtype=bool) & np.isfinite(a) & np.isfinite(b)
    found = estimate(a - b, common, steps=steps, horizon=horizon, level=level)
    ok = enough(found.origins, found.pairs)
    verdict = NO_CLEAR_DIFFERENCE
    if ok and found.upper < 0:
        verdict = BETTER
    elif ok and found.lower > 0:
        verdict = WORSE
    return Comparison(found.centre, found.lower, found.upper, found.origins, found.pairs,
                      verdict, ok)


def rank(errors: Mapping[str, np.ndarray], mask: np.ndarray, *,
         eligible: Collection[str] | None = None, steps: np.ndarray | None = None,
         horizon: int | None = None, level: float = LEVEL) -> Ranking:
    """Rank the predictors of one cell (``errors``: name -> (N, L) errors; ``mask``: the
    cell's pairs). The cell's origins and pairs are those of ``mask``; below the minimum
    evidence it names no best. Otherwise the best is the predictor of ``eligible`` (default:
    all) with the lowest centre, and every other predictor is compared with it on their
    common pairs. Ties on the centre go to the first in ``errors``' order."""
    mask = np.asarray(mask, dtype=bool)
    origins, pairs = int(mask.any(axis=1).sum()), int(mask.sum())
    centres = {name: estimate(values, mask).centre for name, values in errors.items()}
    allowed = [n for n in errors if (eligible is None or n in eligible)
               and np.isfinite(centres[n])]
    if not enough(origins, pairs):
        return Ranking(False, None, origins, pairs, centres,
                       reason=f"{TOO_FEW} ({origins} origins, {pairs} pairs; it takes "
                              f"{MIN_ORIGINS} origins and {MIN_PAIRS} pairs)")
    if not allowed:
        return Ranking(False, None, origins, pairs, centres,
                       reason="no predictor made its own forecasts at half the origins")
    best = min(allowed, key=lambda n: centres[n])
    comparisons = {name: compare(values, errors[best], mask, steps=steps, horizon=horizon,
                                 level=level)
                   for name, values in errors.items() if name != best}
    return Ranking(True, best, origins, pairs, centres, comparisons,
                   {name: c.verdict for name, c in comparisons.items()})
