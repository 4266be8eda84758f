"""The report's matplotlib figures, written as PNG files (object API: no pyplot, no display).

Error rate against origin step (one figure per horizon, states shaded, noise floor dashed),
forecast against actual for the busiest experts of one layer, and error rate per layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from moetrace.backtest import BacktestResult
from moetrace.report.results import Row, find
from moetrace.trace.shares import Loads

if TYPE_CHECKING:
    from matplotlib.figure import Figure

_TRANSIENT, _STABLE = "#f6d7b0", "#d4ecd4"
_DPI = 110


@dataclass(frozen=True)
class FigureFile:
    """A written figure: file name under figures/, and a caption."""

    name: str
    caption: str


def _figure(**kwargs) -> Figure:
    """A new figure; matplotlib is imported only when a report draws (keeps the CLI quick)."""
    from matplotlib.figure import Figure

    return Figure(dpi=_DPI, layout="constrained", **kwargs)


def _colors(result: BacktestResult) -> dict[str, str]:
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf"]
    return {name: palette[i % len(palette)] for i, name in enumerate(result.predictors)}


def _pct(ax) -> None:
    ax.yaxis.set_major_formatter(lambda v, _: f"{v * 100:.3g}%")


def origin_floor(result: BacktestResult, floors: dict[str, np.ndarray] | None) -> np.ndarray | None:
    """Noise floor per origin: mean over layers of each layer's floor in its state there."""
    if not floors or result.stable is None or not {"stable", "transient"} <= floors.keys():
        return None
    per_pair = np.where(result.stable, floors["stable"][None, :], floors["transient"][None, :])
    return np.nanmean(per_pair, axis=1) if np.isfinite(per_pair).any() else None


def error_vs_origin(result: BacktestResult, horizon: int, steps: np.ndarray,
                    stable_from: int | None, floors: dict[str, np.ndarray] | None) -> Figure:
    """Layer-mean error rate at each origin for every predictor, model states shaded."""
    fig = _figure(figsize=(8, 4))
    ax = fig.add_subplot()
    first, last = int(steps[0]), int(steps[-1])
    if result.stable is not None:
        edge = last if stable_from is None else stable_from
        ax.axvspan(first, edge, color=_TRANSIENT, label="transient (some layer)")
        if stable_from is not None:
            ax.axvspan(stable_from, last, color=_STABLE, label="stable (all layers)")
    colors = _colors(result)
    for name in result.predictors:
        s = result.scores[(name, horizon)]
        ax.plot(result.origins[s.fits], np.nanmean(s.metrics["error_rate"][s.fits], axis=1),
                marker="o", ms=3, color=colors[name], label=name)
    floor = origin_floor(result, floors)
    if floor is not None:
        fits = result.scores[(result.predictors[0], horizon)].fits
        ax.plot(result.origins[fits], floor[fits], ls="--", color="black", label="noise floor")
    ax.set_xlim(first, last)
    ax.set_yscale("log")
    ax.set_xlabel("origin step (last step the predictor sees)")
    ax.set_ylabel(f"error rate over the next {horizon:,} steps")
    ax.set_title(f"Error rate by origin, {horizon:,}-step horizon (mean over layers)")
    ax.legend(fontsize=8, ncol=2)
    return fig


def forecast_vs_actual(result: BacktestResult, loads: Loads, experts: int = 4) -> Figure:
    """The example origin's forecasts against the actual shares of the layer's busiest experts."""
    ex = result.example
    horizon = len(ex.steps)
    steps = loads.steps
    lo = int(np.searchsorted(steps, ex.origin - horizon, side="right"))
    hi = int(np.searchsorted(steps, ex.origin + horizon, side="right"))
    mid = int(np.searchsorted(steps, ex.origin, side="right"))
    actual = loads.shares[ex.layer, lo:hi]
    busiest = np.argsort(loads.shares[ex.layer, mid:hi].mean(axis=0))[::-1][:experts]
    fig = _figure(figsize=(9, 5.5))
    axes = fig.subplots(2, (len(busiest) + 1) // 2, sharex=True, squeeze=False).ravel()
    colors = _colors(result)
    for ax, e in zip(axes, busiest):
        ax.plot(steps[lo:hi], actual[:, e], color="#888888", lw=0.5, label="actual")
        for name, forecast in ex.forecasts.items():
            ax.plot(ex.steps, forecast[:, e], color=colors[name], lw=1.5, label=name)
        ax.axvline(ex.origin, color="black", lw=0.8, ls=":")
        ax.set_title(f"expert {e}", fontsize=9)
        _pct(ax)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"Forecast from step {ex.origin:,} against actual shares, "
                 f"layer {loads.layers[ex.layer]}", fontsize=10)
    fig.supylabel("load share")
    fig.supxlabel("step")
    return fig


def error_by_layer(result: BacktestResult, rows: list[Row]) -> Figure:
    """Error rate per layer (all origins) for every predictor and horizon, with the noise floor."""
    fig = _figure(figsize=(9, 3.2 * len(result.horizons)))
    axes = fig.subplots(len(result.horizons), 1, squeeze=False).ravel()
    colors = _colors(result)
    x = np.arange(len(result.layers))
    width = 0.8 / len(result.predictors)
    for ax, h in zip(axes, result.horizons):
        floors = []
        for k, name in enumerate(result.predictors):
            vals = [getattr(find(rows, predictor=name, horizon=h, layer=layer), "error_rate",
                            np.nan) for layer in result.layers]
            ax.bar(x + (k - (len(result.predictors) - 1) / 2) * width,
                   np.asarray(vals, dtype=float), width, color=colors[name], label=name)
            floors = [getattr(find(rows, predictor=name, horizon=h, layer=layer), "noise_floor",
                              None) for layer in result.layers]
        floor = np.array([np.nan if f is None else f for f in floors])
        if np.isfinite(floor).any():
            ax.scatter(x, floor, marker="_", s=400, color="black", zorder=3, label="noise floor")
        ax.set_xticks(x, [str(layer) for layer in result.layers])
        ax.set_xlabel("MoE layer")
        ax.set_ylabel("error rate")
        ax.set_title(f"Error rate per layer, {h:,}-step horizon (all origins)", fontsize=10)
        _pct(ax)
    axes[0].legend(fontsize=8, ncol=len(result.predictors) + 1)
    return fig


def write_figures(directory: Path, result: BacktestResult, loads: Loads, rows: list[Row], *,
                  stable_from: int | None,
                  floors: dict[str, np.ndarray] | None) -> list[FigureFile]:
    """Write every figure as PNG under ``directory`` and describe each."""
    directory.mkdir(parents=True, exist_ok=True)
    made: list[tuple[str, Figure, str]] = []
    for h in result.horizons:
        made.append((f"error_vs_origin_{h}.png",
                     error_vs_origin(result, h, loads.steps, stable_from, floors),
                     f"Error rate at each origin, {h:,}-step horizon, mean over layers; shading: "
                     "model state at that step; dashed: noise floor."))
    if result.example is not None and result.example.forecasts:
        made.append(("forecast_vs_actual.png", forecast_vs_actual(result, loads),
                     f"Each predictor's forecast from step {result.example.origin:,} against the "
                     f"actual shares of the busiest experts of layer "
                     f"{loads.layers[result.example.layer]}."))
    made.append(("error_by_layer.png", error_by_layer(result, rows),
                 "Error rate per layer over all origins; black bars: the layer's noise floor."))
    files = []
    for name, fig, caption in made:
        fig.savefig(directory / name)
        files.append(FigureFile(name, caption))
    return files
