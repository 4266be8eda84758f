"""Forecast a trace with one or more registered predictors and return the long frame.

The library call behind ``moetrace predict``: choose the origin, fit each predictor on the
history up to it, forecast the next H steps, and shape the result as the long table
(``predictor, origin, step, layer, expert, share``) plus a per-layer summary.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import polars as pl

from moetrace.errors import ParameterError
from moetrace.output import write_file
from moetrace.predictors.base import (
    PredictorOptions,
    Uncertainty,
    make_predictor,
    select_predictors,
)
from moetrace.calibrate import calibrate
from moetrace.progress import Progress
from moetrace.trace.shares import Loads

#: Parquet key-value metadata of a written forecast table: which predictors fell back, and why.
FALLBACKS_KEY = "moetrace.fallbacks"
#: Columns and dtypes of a written forecast.
FORECAST_SCHEMA = {"predictor": pl.String, "origin": pl.Int64, "step": pl.Int64,
                   "layer": pl.Int32, "expert": pl.Int32, "share": pl.Float64,
                   "mean_lower": pl.Float64, "mean_upper": pl.Float64}


@dataclass(frozen=True)
class Forecasts:
    """Forecast shares of several predictors from one origin, for steps origin+1..origin+H."""

    origin: int
    steps: np.ndarray  # (H,) step numbers forecast
    layers: tuple[int, ...]
    shares: dict[str, np.ndarray]  # predictor -> (L, H, E)
    skipped: tuple[tuple[str, str], ...] = ()  # predictors left out, and why
    #: predictor -> bounds of each expert's mean share over the horizon and each layer's
    #: expected error rate (None: the history was too short to calibrate)
    uncertainty: dict[str, Uncertainty | None] = field(default_factory=dict)
    #: predictor -> why it did not forecast with its own model but with a simpler rule (for
    #: example an LSTM with too little history, which forecasts with its baseline), or None
    fallbacks: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def merge(cls, parts: list["Forecasts"]) -> "Forecasts":
        """Forecasts of every layer from forecasts of chunks of layers (same origin, steps
        and predictors, in layer order)."""
        if len(parts) == 1:
            return parts[0]
        first = parts[0]

        def joined(name: str) -> Uncertainty | None:
            us = [p.uncertainty.get(name) for p in parts]
            if any(u is None for u in us):
                return None
            return Uncertainty(us[0].horizon, np.concatenate([u.lower for u in us]),
                               np.concatenate([u.upper for u in us]),
                               np.concatenate([u.expected_error for u in us]), us[0].level)

        return cls(first.origin, first.steps, tuple(x for p in parts for x in p.layers),
                   {name: np.concatenate([p.shares[name] for p in parts])
                    for name in first.shares}, first.skipped,
                   {name: joined(name) for name in first.uncertainty},
                   {name: next((p.fallbacks.get(name) for p in parts if p.fallbacks.get(name)),
                               None) for name in first.fallbacks})

    def frame(self) -> pl.DataFrame:
        """The long table, one row per (predictor, step, layer, expert)."""
        parts = []
        for name, arr in self.shares.items():
            n_layers, horizon, n_experts = arr.shape
            layer = np.repeat(np.asarray(self.layers, dtype=np.int32), horizon * n_experts)
            step = np.tile(np.repeat(self.steps.astype(np.int64), n_experts), n_layers)
            expert = np.tile(np.arange(n_experts, dtype=np.int32), n_layers * horizon)
            u = self.uncertainty.get(name)
            bounds = [np.full(arr.size, np.nan)] * 2 if u is None else \
                [np.repeat(b[:, None, :], horizon, axis=1).reshape(-1) for b in (u.lower,
                                                                                   u.upper)]
            parts.append(pl.DataFrame({"step": step, "layer": layer, "expert": expert,
                                       "share": arr.reshape(-1), "mean_lower": bounds[0],
                                       "mean_upper": bounds[1]}).with_columns(
                pl.lit(name).alias("predictor"), pl.lit(self.origin, pl.Int64).alias("origin")))
        return pl.concat(parts).select(list(FORECAST_SCHEMA))

    def summary(self, top: int = 3) -> pl.DataFrame:
        """Per predictor and layer: hottest and coldest experts (mean forecast share) with
        their interval, the forecast max/mean imbalance (max share x experts, averaged over
        the horizon) and the expected error rate."""
        rows = []
        for name, arr in self.shares.items():
            mean = arr.mean(axis=1)  # (L, E)
            order = np.argsort(-mean, axis=1, kind="stable")
            imbalance = (arr.max(axis=2) * arr.shape[2]).mean(axis=1)
            u = self.uncertainty.get(name)
            for i, layer in enumerate(self.layers):
                hot, cold = order[i, :top], order[i, ::-1][:top]
                rows.append({
                    "predictor": name, "layer": layer,
                    "hottest": [int(e) for e in hot],
                    "hottest_share": [float(mean[i, e]) for e in hot],
                    "hottest_interval": None if u is None else
                    [[float(u.lower[i, e]), float(u.upper[i, e])] for e in hot],
                    "coldest": [int(e) for e in cold],
                    "coldest_share": [float(mean[i, e]) for e in cold],
                    "imbalance": float(imbalance[i]),
                    "expected_error": None if u is None else float(u.expected_error[i]),
                    "interval_width": None if u is None else
                    float((u.upper[i] - u.lower[i]).mean()),
                })
        return pl.DataFrame(rows)

    def document(self, trace: str | None = None) -> dict:
        """The JSON document of ``moetrace predict --json`` (schema in docs/predictors.md)."""
        return {
            "schema": "moetrace.forecast", "schema_version": 1, "trace": trace,
            "origin": self.origin, "horizon": int(len(self.steps)),
            "first_step": int(self.steps[0]), "last_step": int(self.steps[-1]),
            "predictors": list(self.shares),
            "skipped": [{"predictor": n, "reason": r} for n, r in self.skipped],
            "fallbacks": {name: self.fallbacks.get(name) for name in self.shares},
            "layers": self.summary().to_dicts(),
        }


#: Predictors `predict` runs when none are named: the state-aware one (docs/predictors.md).
DEFAULT_PREDICTORS = ("auto",)


def forecast_loads(loads: Loads, predictors: Sequence[str] | str | None, horizon: int,
                   at: int | None = None, options: PredictorOptions | None = None, *,
                   train: Loads | None = None, progress: Progress | None = None) -> Forecasts:
    """Fit each predictor on ``loads`` up to step ``at`` (default: the last step) and forecast
    the next ``horizon`` steps. ``predictors`` as :func:`select_predictors` takes them;
    ``train`` is a separate trace a learning predictor (lstm) trains on."""
    if horizon <= 0:
        raise ParameterError(f"--horizon must be a positive number of steps, got {horizon}")
    selection = select_predictors(predictors, DEFAULT_PREDICTORS)
    names = selection.names
    if loads.n_steps == 0:
        raise ParameterError("the trace has no steps to forecast from")
    first, last = int(loads.steps[0]), int(loads.steps[-1])
    if at is not None and not first <= at <= last:
        raise ParameterError(f"--at {at} is outside the trace's steps {first}..{last}")
    history = loads.upto(last if at is None else at)
    origin = int(history.steps[-1])
    options = replace(options or PredictorOptions(), horizons=(int(horizon),))
    shares, uncertainty, fallbacks = {}, {}, {}
    for i, name in enumerate(names):
        if progress is not None:
            progress(i, len(names), "predictors")
        model = make_predictor(name, options, train=train, progress=progress).fit(history)
        shares[name] = model.forecast(horizon)
        fallbacks[name] = model.fallback
        uncertainty[name] = model.uncertainty(horizon) or calibrate(
            lambda: make_predictor(name, options, train=train), history, horizon,
            shares[name])
    if progress is not None:
        progress(len(names), len(names), "predictors")
    steps = np.arange(origin + 1, origin + horizon + 1, dtype=np.int64)
    return Forecasts(origin, steps, tuple(int(x) for x in loads.layers), shares,
                     selection.skipped, uncertainty, fallbacks)


def write_forecasts(forecasts: Forecasts, path: str | Path, *, inputs=(),
                    force: bool = False) -> Path:
    """Write the long forecast table atomically: CSV for a ``.csv`` path, Parquet for
    ``.parquet`` (another extension is refused: see :func:`forecast_format`). A Parquet table
    carries, under the key ``moetrace.fallbacks``, the JSON object of
    :attr:`Forecasts.fallbacks` (which predictor forecast with a simpler rule, and why)."""
    path = Path(path)
    fmt = forecast_format(path)
    with write_file(path, inputs=inputs, force=force) as tmp:
        frame = forecasts.frame()
        if fmt == "csv":
            frame.write_csv(tmp)
        else:
            frame.write_parquet(tmp, compression="zstd", metadata={
                FALLBACKS_KEY: json.dumps({n: forecasts.fallbacks.get(n)
                                           for n in forecasts.shares})})
    return path


#: forecast table formats by file extension
FORECAST_FORMATS = {".parquet": "parquet", ".csv": "csv"}


def forecast_format(path: str | Path) -> str:
    """The format a forecast table is written in, from its extension (ParameterError for
    another: a table named x.json would not hold JSON)."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORECAST_FORMATS:
        raise ParameterError(f"{path}: a forecast table is written as Parquet or CSV; name it "
                             "*.parquet or *.csv")
    return FORECAST_FORMATS[suffix]
