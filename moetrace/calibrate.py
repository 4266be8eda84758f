"""How far a forecast can be trusted: intervals and expected error for any predictor.

A predictor that calibrates itself (``auto``, from its own inner evaluation) answers
``uncertainty(horizon)``; for the others, :func:`calibrate` asks the same question the hard
way, through the one backtest engine: it backtests the predictor at a few inner origins of
the history (in increasing order, so arima and lstm reuse their estimates), and turns the
errors of those forecasts against what followed into split-conformal bounds of every expert's
mean share over the horizon and the layer's expected per-step error rate
(moetrace/predictors/inner.py). History only.

How well that held in a backtest is summarised here too: :func:`coverage_of` (the coverage
of every forecast, its spread over layers and experts, expected against realised error) and
:func:`calibration_verdict`, the one line a report ends its calibration section with.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from moetrace.backtest import BacktestResult, Scores, backtest
from moetrace.errors import ParameterError
from moetrace.evidence import MIN_ORIGINS, estimate
from moetrace.metrics import nanmean_rows
from moetrace.predictors.base import Predictor, Uncertainty
from moetrace.predictors.inner import conformal_interval
from moetrace.trace.shares import Loads

#: inner origins fitted for a predictor without a calibration of its own
ORIGINS = 4
LEVEL = 0.8
#: coverage within this of the level is "calibrated" (80% intervals: 75% to 85%)
TOLERANCE = 0.05


def inner_targets(history: Loads, horizon: int, origins: int = ORIGINS) -> np.ndarray:
    """Up to ``origins`` recorded steps, a quarter horizon apart, the last a horizon before
    the history's last step (none before the second recorded step)."""
    last = int(history.steps[-1])
    stride = max(history.interval, horizon // 4)
    targets = np.array([last - horizon - j * stride for j in range(origins)][::-1])
    targets = targets[targets >= int(history.steps[0])]
    if targets.size == 0:
        return targets
    snapped = np.unique(history.snap(targets))
    return snapped[snapped > int(history.steps[0])]


def calibrate(make: Callable[[], Predictor], history: Loads, horizon: int,
              forecast: np.ndarray, level: float = LEVEL,
              origins: int = ORIGINS) -> Uncertainty | None:
    """Uncertainty of ``forecast`` (L, H, E), made from ``history`` by a predictor that
    ``make()`` creates, from its errors at up to ``origins`` inner origins (see
    :func:`inner_targets`); None if the history is too short for one, or the predictor could
    be fitted at none of them."""
    targets = inner_targets(history, horizon, origins)
    if targets.size == 0:
        return None
    try:
        result = backtest(history, [make()], [horizon], origins=targets, min_history=1,
                          lookahead_radius=None, keep_means=True)
    except ParameterError:  # too short for this predictor at every inner origin
        return None
    scores = next(iter(result.scores.values()))
    past_forecast, past_actual = scores.means
    fitted = np.isfinite(scores.metrics["error_rate"]).all(axis=1)
    if not fitted.any():
        return None
    lower, upper = conformal_interval(forecast.mean(axis=1), past_forecast[fitted],
                                      past_actual[fitted], level)
    expected = nanmean_rows(scores.metrics["error_rate"][fitted].T)
    return Uncertainty(int(horizon), lower, upper, expected, level)


@dataclass(frozen=True)
class Coverage:
    """How a predictor's stated uncertainty held over a set of backtest forecasts (the
    (origin, layer) pairs of one horizon and state). Fractions, not percentages."""

    level: float  # the intervals' nominal coverage
    origins: int
    forecasts: int  # (origin, layer) forecasts counted: every scored one
    stated: int  # of them with an interval (the others count as not covered)
    #: share of experts whose actual mean fell inside, with the report's centre
    #: (moetrace.evidence.estimate: the mean over origins of the per-origin layer mean), so
    #: it is report.json's ``coverage`` of the same cell
    pooled: float
    stated_pooled: float | None  # the same over the forecasts with an interval only
    layers: tuple[float, float]  # lowest and highest coverage of one layer
    experts: tuple[float, float] | None  # 10th and 90th percentile over (layer, expert)
    expected_error: float | None  # stated expected error rate over them (the same centre)
    realised_error: float | None  # realised error rate over the same forecasts (the same)
    rank_correlation: float | None  # Spearman's, expected against realised, across them

    @property
    def error_ratio(self) -> float | None:
        """Expected over realised mean error rate (1: the forecast knew how wrong it was)."""
        if self.expected_error is None or not self.realised_error:
            return None
        return self.expected_error / self.realised_error


def coverage_of(scores: Scores, mask: np.ndarray, level: float = LEVEL) -> Coverage | None:
    """The coverage of every forecast in ``mask`` ((origins, layers) bool, for example one
    state's pairs) by a predictor's ``scores`` at one horizon; None if the predictor states
    no uncertainty or no forecast is in ``mask``. A forecast without an interval counts as
    not covered (moetrace.backtest); ``stated_pooled`` shows the others alone. Every centre
    is the report's (:func:`moetrace.evidence.estimate`)."""
    m = scores.metrics
    if "stated" not in m or scores.inside is None:
        return None
    scored = mask & np.isfinite(m["error_rate"]) & np.isfinite(m["coverage"])
    if not scored.any():
        return None
    stated = scored & (m["stated"] > 0)
    per_layer = [float(m["coverage"][:, j][scored[:, j]].mean())
                 for j in range(scored.shape[1]) if scored[:, j].any()]
    inside = np.where(scored[:, :, None], scores.inside, np.nan)
    counted = np.isfinite(inside).any(axis=0)  # (L, E) cells with a forecast
    per_expert = (np.nansum(inside, axis=0)[counted] /
                  np.isfinite(inside).sum(axis=0)[counted])
    both = stated & np.isfinite(m["expected_error"])
    expected = m["expected_error"][both]
    realised = m["error_rate"][both]
    centre = lambda values, where: float(estimate(values, where).centre)  # noqa: E731
    rho = None
    if both.sum() >= 3 and np.ptp(expected) > 0 and np.ptp(realised) > 0:
        from scipy.stats import spearmanr

        rho = float(spearmanr(expected, realised).statistic)
    return Coverage(
        level=level, origins=int(scored.any(axis=1).sum()), forecasts=int(scored.sum()),
        stated=int(stated.sum()), pooled=centre(m["coverage"], scored),
        stated_pooled=centre(m["coverage"], stated) if stated.any() else None,
        layers=(min(per_layer), max(per_layer)),
        experts=(float(np.quantile(per_expert, 0.1)), float(np.quantile(per_expert, 0.9)))
        if per_expert.size else None,
        expected_error=centre(m["expected_error"], both) if both.any() else None,
        realised_error=centre(m["error_rate"], both) if both.any() else None,
        rank_correlation=rho)


def state_coverage(result: BacktestResult, predictor: str, horizon: int,
                   state: str = "stable", level: float = LEVEL) -> Coverage | None:
    """:func:`coverage_of` over the (origin, layer) pairs of one state ("stable",
    "transient" or "all"; "all" only when the result has no state labels)."""
    scores = result.scores.get((predictor, int(horizon)))
    if scores is None:
        return None
    if state == "all":
        mask = np.ones((len(result.origins), len(result.layers)), dtype=bool)
    elif result.stable is None:
        return None
    else:
        mask = result.stable if state == "stable" else ~result.stable
    return coverage_of(scores, mask, level)


def calibration_verdict(result: BacktestResult, predictor: str = "auto",
                        state: str = "stable", level: float = LEVEL,
                        tolerance: float = TOLERANCE) -> str | None:
    """One line a report can end its calibration section with: whether ``predictor``'s
    intervals held what they claim in ``state`` at every horizon of the backtest
    ("calibrated": coverage of every forecast within ``tolerance`` of ``level``; "too
    narrow" / "too wide" otherwise; "too few origins to judge" below
    :data:`MIN_ORIGINS`), with the coverage per horizon, and how the expected error
    compared with the realised one. None where the predictor states no uncertainty or the
    state has no forecasts. Pure: a function of the backtest result alone."""
    cells = {h: state_coverage(result, predictor, h, state, level) for h in result.horizons}
    cells = {h: c for h, c in cells.items() if c is not None}
    if not cells:
        return None
    judged = {h: c for h, c in cells.items() if c.origins >= MIN_ORIGINS}
    figures = ", ".join(f"{100 * c.pooled:.0f}% at {h:,} steps" for h, c in cells.items())
    head = (f"{predictor}'s {100 * level:.0f}% intervals, {state} state: held {figures} "
            f"(every forecast counted)")
    if not judged:
        return f"{head}: too few origins to judge (fewer than {MIN_ORIGINS})."
    narrow = [h for h, c in judged.items() if c.pooled < level - tolerance]
    wide = [h for h, c in judged.items() if c.pooled > level + tolerance]
    steps = lambda hs: " and ".join(f"{h:,}" for h in hs)  # noqa: E731
    if not narrow and not wide:
        verdict = (f"calibrated ({100 * (level - tolerance):.0f}-"
                   f"{100 * (level + tolerance):.0f}%)")
    else:
        verdict = "; ".join(([f"too narrow at {steps(narrow)} steps"] if narrow else []) +
                            ([f"too wide at {steps(wide)} steps"] if wide else []))
    ratios = [c.error_ratio for c in judged.values() if c.error_ratio is not None]
    tail = ""
    if ratios:
        rhos = [c.rank_correlation for c in judged.values() if c.rank_correlation is not None]
        tail = (f"; expected error {' / '.join(f'{r:.2f}' for r in ratios)}x the realised"
                + (f" (rank correlation {' / '.join(f'{r:.2f}' for r in rhos)})"
                   if rhos else ""))
    return f"{head}: {verdict}{tail}."
