"""The results table: backtest scores averaged per predictor, horizon, state and layer.

One :class:`Row` per (predictor, horizon, state, layer), with ``layer`` None for the average
over layers. These rows are ``results`` in report.json (schema in docs/report.md).

Every error comes with its two references (docs/metrics.md): the sampling **noise floor**
(what a perfect forecast of the underlying shares still scores) and the **look-ahead bound**
(what a forecast that sees the future, a centred moving average of the actual shares,
scores); ``reference`` is the higher of the two, the level no forecaster can be expected to
beat on this trace.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from moetrace.backtest import BacktestResult
from moetrace.metrics import METRICS

#: Version of report.json's layout; bump when a field changes meaning or disappears.
SCHEMA_VERSION = 2
SCHEMA_NAME = "moetrace.report"
STATES = ("transient", "stable", "all")


@dataclass(frozen=True)
class Row:
    """Means over the origins (and layers) behind the row, p10/p90 across origins, all fractions."""

    predictor: str
    horizon: int
    state: str
    layer: int | None
    error_rate: float
    mean_error_ratio: float | None
    window_error: float
    imbalance_error: float
    noise_floor: float | None
    origins: int
    pairs: int  # (origin, layer) pairs averaged; equals ``origins`` for a single layer
    zero_actuals: int  # forecast entries the mean error ratio skipped because a = 0
    error_rate_p10: float
    error_rate_p90: float
    mean_error_ratio_p10: float | None
    mean_error_ratio_p90: float | None
    window_error_p10: float
    window_error_p90: float
    imbalance_error_p10: float
    imbalance_error_p90: float
    #: median across origins of the per-origin error rate (its p10/p90 are the ones above)
    error_rate_median: float | None = None
    lookahead: float | None = None  # the look-ahead bound's error rate, same pairs
    #: the predictor's own calibration, where it states one (auto): share of experts whose
    #: actual mean share fell inside the forecast interval, and its expected error rate
    coverage: float | None = None
    expected_error: float | None = None

    @property
    def reference(self) -> float | None:
        """The higher of the noise floor and the look-ahead bound (None if neither)."""
        known = [v for v in (self.noise_floor, self.lookahead) if v is not None]
        return max(known) if known else None

    def to_dict(self) -> dict:
        return {**asdict(self), "reference": self.reference}


def state_masks(result: BacktestResult) -> dict[str, np.ndarray]:
    """(N, L) masks of the (origin, layer) pairs in each state; only "all" if states are unknown."""
    shape = (len(result.origins), len(result.layers))
    masks = {"all": np.ones(shape, dtype=bool)}
    if result.stable is not None:
        masks["transient"] = ~result.stable
        masks["stable"] = result.stable.copy()
    return masks


def summarize(result: BacktestResult,
              noise_floors: dict[str, np.ndarray] | None = None) -> list[Row]:
    """Rows for every predictor, horizon, state and layer (plus the layer average).

    ``noise_floors`` maps a state to an (L,) array of per-step error-rate floors (NaN where a
    layer has no steps in that state). A state/layer with no origins gives no row.
    """
    rows = []
    masks = state_masks(result)
    for name in result.predictors:
        for h in result.horizons:
            scores = result.scores[(name, h)]
            extra = {"lookahead": result.lookahead.get(h),
                     "coverage": scores.metrics.get("coverage"),
                     "expected_error": scores.metrics.get("expected_error")}
            for state in STATES:
                if state not in masks:
                    continue
                # origins where the horizon fits and the predictor could be fitted
                mask = masks[state] & scores.fits[:, None] & \
                    np.isfinite(scores.metrics["error_rate"])
                floors = (noise_floors or {}).get(state)
                rows.extend(_rows(name, h, state, scores.metrics, mask, floors, result.layers,
                                  extra))
    return rows


def _rows(name: str, h: int, state: str, metrics: dict[str, np.ndarray], mask: np.ndarray,
          floors: np.ndarray | None, layers: tuple[int, ...],
          extra: dict[str, np.ndarray | None]) -> list[Row]:
    out = []
    if mask.any():
        per_origin = {k: _masked_mean(metrics[k], mask, axis=1) for k in METRICS}
        pairs_per_layer = mask.sum(axis=0)
        floor = (None if floors is None
                 else _finite(np.nansum(floors * pairs_per_layer) / pairs_per_layer.sum()))
        out.append(_row(name, h, state, None, metrics, mask, per_origin, floor, extra))
    for pos, layer in enumerate(layers):
        col = mask[:, pos]
        if not col.any():
            continue
        single = np.zeros_like(mask)
        single[:, pos] = col
        per_origin = {k: metrics[k][col, pos] for k in METRICS}
        floor = None if floors is None else _finite(floors[pos])
        out.append(_row(name, h, state, layer, metrics, single, per_origin, floor, extra))
    return out


def _row(name, h, state, layer, metrics, mask, per_origin, floor, extra) -> Row:
    values = {}
    for k in METRICS:
        pooled = metrics[k][mask]
        values[k] = _finite(np.nanmean(pooled)) if np.isfinite(pooled).any() else None
        spread = per_origin[k][np.isfinite(per_origin[k])]
        p10, p50, p90 = np.percentile(spread, [10, 50, 90]) if spread.size else (None,) * 3
        values[f"{k}_p10"], values[f"{k}_p90"] = _finite(p10), _finite(p90)
        if k == "error_rate":
            values["error_rate_median"] = _finite(p50)
    for key, array in extra.items():
        picked = None if array is None else array[mask]
        values[key] = None if picked is None or not np.isfinite(picked).any() else \
            _finite(np.nanmean(picked))
    return Row(predictor=name, horizon=int(h), state=state, layer=layer, noise_floor=floor,
               origins=int(mask.any(axis=1).sum()), pairs=int(mask.sum()),
               zero_actuals=int(np.nansum(metrics["zero_actuals"][mask])), **values)


def _masked_mean(values: np.ndarray, mask: np.ndarray, axis: int) -> np.ndarray:
    """Mean of the finite, selected entries along ``axis`` (NaN where there are none)."""
    keep = mask & np.isfinite(values)
    total = np.where(keep, values, 0.0).sum(axis=axis)
    count = keep.sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def per_origin_error(result: BacktestResult, name: str, horizon: int,
                     state: str) -> np.ndarray:
    """(N,) the layer-mean error rate of ``name`` at each origin over the layers in
    ``state`` there (NaN where none is, or the horizon does not fit)."""
    mask = state_masks(result)[state] & result.scores[(name, horizon)].fits[:, None]
    return _masked_mean(result.scores[(name, horizon)].metrics["error_rate"], mask, axis=1)


def per_origin_reference(result: BacktestResult, horizon: int, state: str,
                         floors: dict[str, np.ndarray] | None) -> np.ndarray:
    """(N,) at each origin, the higher of the layer-mean noise floor and the layer-mean
    look-ahead bound over the layers in ``state`` there: the same averaging as
    :func:`per_origin_error`, so the two can be compared origin by origin."""
    fits = next(s.fits for (n, h), s in result.scores.items() if h == horizon)
    mask = state_masks(result)[state] & fits[:, None]
    lookahead = _masked_mean(result.lookahead[horizon], mask, axis=1) \
        if horizon in result.lookahead else np.full(len(fits), np.nan)
    if floors is None or result.stable is None:
        return lookahead
    per_pair = np.where(result.stable, floors["stable"][None, :], floors["transient"][None, :])
    floor = _masked_mean(per_pair, mask, axis=1)
    return np.fmax(lookahead, floor)


def _finite(value) -> float | None:
    """A plain float for JSON, None for NaN or a missing value."""
    if value is None:
        return None
    value = float(value)
    return value if np.isfinite(value) else None


def find(rows: list[Row], *, predictor: str, horizon: int, state: str = "all",
         layer: int | None = None) -> Row | None:
    """The one row with these keys, or None if that combination had no origins."""
    for row in rows:
        if (row.predictor, row.horizon, row.state, row.layer) == (predictor, horizon, state,
                                                                   layer):
            return row
    return None
