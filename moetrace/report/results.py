"""The results table: backtest scores per predictor, horizon, state and layer.

One :class:`Row` per (predictor, horizon, state, layer), with ``layer`` None for the layers
together. These rows are ``results`` in report.json (schema in docs/report.md).

Every figure of a row has one centre (moetrace.evidence): the mean over the row's origins of
the mean over its layers there, with a 95% interval of that mean over origins; the noise floor,
the constant bound and the look-ahead reference of a row are the same centre over the same
pairs, so they compare with its error directly (docs/metrics.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from moetrace.backtest import BacktestResult
from moetrace.evidence import estimate
from moetrace.metrics import METRICS

#: Version of report.json's layout; bump when a field changes meaning or disappears.
SCHEMA_VERSION = 3
SCHEMA_NAME = "moetrace.report"
STATES = ("transient", "stable", "all")


@dataclass(frozen=True)
class Row:
    """The centre of each metric over the row's (origin, layer) pairs (the mean over origins of
    the layer mean) with its 95% interval over origins (``_lower``, ``_upper``: None with one
    origin), and the references on the same pairs; all fractions."""

    predictor: str
    horizon: int
    state: str
    layer: int | None
    error_rate: float
    error_rate_lower: float | None
    error_rate_upper: float | None
    mean_error_ratio: float | None
    mean_error_ratio_lower: float | None
    mean_error_ratio_upper: float | None
    window_error: float
    window_error_lower: float | None
    window_error_upper: float | None
    imbalance_error: float
    imbalance_error_lower: float | None
    imbalance_error_upper: float | None
    noise_floor: float | None
    #: the lowest error rate any forecast held constant over the horizon scores on these pairs
    constant_bound: float | None
    lookahead: float | None  # the look-ahead reference's error rate (no bound)
    origins: int
    pairs: int  # (origin, layer) pairs behind the row; equals ``origins`` for a single layer
    zero_actuals: int  # forecast entries the mean error ratio skipped because a = 0
    #: share of the cell's origins at which the predictor forecast with a simpler rule or
    #: could not be fitted (moetrace.backtest.BacktestResult.fell_back)
    fallback_rate: float | None
    #: every forecast behind the row was held constant over the horizon: the bound binds it
    constant: bool
    #: the predictor's own calibration, where it states one (auto): share of experts whose
    #: actual mean share fell inside the forecast interval, and its expected error rate
    coverage: float | None = None
    expected_error: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def summarize(result: BacktestResult,
              noise_floors: dict[str, np.ndarray] | None = None) -> list[Row]:
    """Rows for every predictor, horizon, state and layer (plus the layers together).

    ``noise_floors`` maps a state to an (L,) array of per-step error-rate floors (NaN where a
    layer has no steps in that state). A state/layer with no scored pair gives no row.
    """
    rows = []
    masks = result.state_masks()
    for name in result.predictors:
        for h in result.horizons:
            scores = result.scores[(name, h)]
            references = {"constant_bound": result.constant_bound.get(h),
                          "lookahead": result.lookahead.get(h),
                          "coverage": scores.metrics.get("coverage"),
                          "expected_error": scores.metrics.get("expected_error")}
            for state in STATES:
                if state not in masks:
                    continue
                cell = masks[state] & scores.fits[:, None]
                floors = (noise_floors or {}).get(state)
                extra = {**references, "noise_floor": None if floors is None
                         else np.broadcast_to(floors, cell.shape)}
                rows.extend(_rows(result, name, h, state, cell, scores.metrics, extra))
    return rows


def _rows(result: BacktestResult, name: str, h: int, state: str, cell: np.ndarray,
          metrics: dict[str, np.ndarray], extra: dict[str, np.ndarray | None]) -> list[Row]:
    """The row of the layers together, then one per layer, of one predictor in one cell."""
    out = []
    scored = cell & np.isfinite(metrics["error_rate"])
    parts = [(None, cell)]
    for pos, layer in enumerate(result.layers):
        single = np.zeros_like(cell)
        single[:, pos] = cell[:, pos]
        parts.append((layer, single))
    for layer, part in parts:
        mask = part & scored
        if mask.any():
            out.append(_row(result, name, h, state, layer, part, mask, metrics, extra))
    return out


def _row(result: BacktestResult, name: str, h: int, state: str, layer: int | None,
         cell: np.ndarray, mask: np.ndarray, metrics: dict[str, np.ndarray],
         extra: dict[str, np.ndarray | None]) -> Row:
    values = {}
    for k in METRICS:
        found = estimate(metrics[k], mask, steps=result.origins, horizon=h, least=0.0)
        values[k] = _finite(found.centre)
        values[f"{k}_lower"] = _finite(found.lower)
        values[f"{k}_upper"] = _finite(found.upper)
    for key, array in extra.items():
        values[key] = None if array is None else _finite(estimate(array, mask).centre)
    constant = metrics["constant"][mask]
    return Row(predictor=name, horizon=int(h), state=state, layer=layer,
               origins=int(mask.any(axis=1).sum()), pairs=int(mask.sum()),
               zero_actuals=int(np.nansum(metrics["zero_actuals"][mask])),
               fallback_rate=result.fallback_rate(name, cell),
               constant=bool(constant.size and (constant == 1).all()),
               **values)


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
