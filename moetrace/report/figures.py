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
from moetrace.metrics import nanmean_rows
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


def _pct(ax, digits: int | None = None) -> None:
    """Y axis in percent (the tables' unit), one precision for every tick of the axis."""
    from matplotlib.ticker import FuncFormatter

    if digits is None:
        lo, hi = ax.get_ylim()
        span = abs(hi - lo) * 100
        digits = 0 if span >= 10 else 1 if span >= 1 else 2 if span >= 0.1 else 3
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v * 100:.{digits}f}%"))


def _scale(ax, values: np.ndarray) -> None:
    """Linear where the values span less than 10x (read as the tables read), log beyond."""
    finite = values[np.isfinite(values) & (values > 0)]
    if finite.size and finite.max() / finite.min() > 10:
        ax.set_yscale("log")
    else:
        ax.set_ylim(bottom=0)


def _legend_below(fig, ax, n: int) -> None:
    """A legend under the plot, where it never covers data."""
    ax.legend(fontsize=8, ncol=min(n, 4), loc="upper center", bbox_to_anchor=(0.5, -0.2),
              frameon=False)


def origin_floor(result: BacktestResult, floors: dict[str, np.ndarray] | None) -> np.ndarray | None:
    """Noise floor per origin: mean over layers of each layer's floor in its state there."""
    if not floors or result.stable is None or not {"stable", "transient"} <= floors.keys():
        return None
    per_pair = np.where(result.stable, floors["stable"][None, :], floors["transient"][None, :])
    return nanmean_rows(per_pair) if np.isfinite(per_pair).any() else None


def error_vs_origin(result: BacktestResult, horizon: int, steps: np.ndarray,
                    stable_from: int | None, floors: dict[str, np.ndarray] | None) -> Figure:
    """Layer-mean error rate at each origin for every predictor, model states shaded."""
    fig = _figure(figsize=(8, 4.4))
    ax = fig.add_subplot()
    first, last = int(steps[0]), int(steps[-1])
    if result.stable is not None:
        edge = last if stable_from is None else stable_from
        ax.axvspan(first, edge, color=_TRANSIENT, label="transient (some layer)")
        if stable_from is not None:
            ax.axvspan(stable_from, last, color=_STABLE, label="stable (all layers)")
    colors = _colors(result)
    shown = []
    for name in result.predictors:
        s = result.scores[(name, horizon)]
        values = nanmean_rows(s.metrics["error_rate"][s.fits])
        shown.append(values)
        ax.plot(result.origins[s.fits], values, marker="o", ms=3, color=colors[name],
                label=name)
    fits = result.scores[(result.predictors[0], horizon)].fits
    floor = origin_floor(result, floors)
    if floor is not None:
        ax.plot(result.origins[fits], floor[fits], ls="--", color="black", label="noise floor")
    if horizon in result.constant_bound:
        bound = nanmean_rows(result.constant_bound[horizon][fits])
        ax.plot(result.origins[fits], bound, ls="-.", color="black", label="constant bound")
    if horizon in result.lookahead:
        reference = nanmean_rows(result.lookahead[horizon][fits])
        ax.plot(result.origins[fits], reference, ls=":", color="grey",
                label="look-ahead reference")
    ax.set_xlim(first, last)
    _scale(ax, np.concatenate(shown) if shown else np.array([]))
    ax.set_xlabel("origin step (last step the predictor sees)")
    ax.set_ylabel(f"error rate over the next {horizon:,} steps")
    ax.set_title(f"Error rate by origin, {horizon:,}-step horizon (mean over layers)",
                 fontsize=10)
    _pct(ax)
    _legend_below(fig, ax, len(result.predictors) + 4)
    return fig


def forecast_vs_actual(result: BacktestResult, loads: Loads, experts: int = 4) -> Figure:
    """The example origin's forecasts against the actual shares of the layer's busiest experts
    (``loads`` holds that layer, alone or among others)."""
    ex = result.example
    row = list(loads.layers).index(result.layers[ex.layer])
    horizon = len(ex.steps)
    steps = loads.steps
    lo = int(np.searchsorted(steps, ex.origin - horizon, side="right"))
    hi = int(np.searchsorted(steps, ex.origin + horizon, side="right"))
    mid = int(np.searchsorted(steps, ex.origin, side="right"))
    actual = loads.shares[row, lo:hi]
    busiest = np.argsort(loads.shares[row, mid:hi].mean(axis=0))[::-1][:experts]
    fig = _figure(figsize=(9, 6))
    axes = fig.subplots(2, (len(busiest) + 1) // 2, sharex=True, squeeze=False).ravel()
    colors = _colors(result)
    for ax, e in zip(axes, busiest):
        ax.plot(steps[lo:hi], actual[:, e], color="#888888", lw=0.5, label="actual")
        for name, forecast in ex.forecasts.items():
            ax.plot(ex.steps, forecast[:, e], color=colors[name], lw=1.5, label=name)
        ax.axvline(ex.origin, color="black", lw=0.8, ls=":")
        ax.set_title(f"expert {e}", fontsize=9)
        _pct(ax)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, ncol=min(len(labels), 6), loc="outside lower center",
               frameon=False)
    fig.suptitle(f"Forecast from step {ex.origin:,} against actual shares, "
                 f"layer {loads.layers[row]}", fontsize=10)
    fig.supylabel("load share")
    fig.supxlabel("step")
    return fig


def error_by_layer(result: BacktestResult, rows: list[Row]) -> Figure:
    """Error rate per layer for every predictor, one panel per horizon and state, with the
    noise floor and the constant bound."""
    states = [s for s in ("stable", "transient") if result.stable is not None] or ["all"]
    panels = [(h, s) for h in result.horizons for s in states]
    fig = _figure(figsize=(9, 2.9 * len(panels) + 0.6))
    axes = fig.subplots(len(panels), 1, squeeze=False).ravel()
    colors = _colors(result)
    x = np.arange(len(result.layers))
    width = 0.8 / len(result.predictors)
    for ax, (h, state) in zip(axes, panels):
        refs: dict[str, list] = {"noise floor": [], "constant bound": []}
        values_all = []
        for k, name in enumerate(result.predictors):
            found = [find(rows, predictor=name, horizon=h, state=state, layer=layer)
                     for layer in result.layers]
            vals = np.array([np.nan if r is None else r.error_rate for r in found], float)
            values_all.append(vals)
            ax.bar(x + (k - (len(result.predictors) - 1) / 2) * width, vals, width,
                   color=colors[name], label=name)
            if k == 0:
                refs["noise floor"] = [np.nan if r is None or r.noise_floor is None
                                       else r.noise_floor for r in found]
                refs["constant bound"] = [np.nan if r is None or r.constant_bound is None
                                          else r.constant_bound for r in found]
        for (label, ref), marker in zip(refs.items(), ("_", "x")):
            ref = np.asarray(ref, dtype=float)
            if np.isfinite(ref).any():
                ax.scatter(x, ref, marker=marker, s=200 if marker == "_" else 30,
                           color="black", zorder=3, label=label)
        ax.set_xticks(x, [str(layer) for layer in result.layers])
        ax.set_ylabel("error rate")
        ax.set_title(f"{h:,}-step horizon, {state} state (mean over origins)", fontsize=10)
        _scale(ax, np.concatenate(values_all))
        _pct(ax)
    axes[-1].set_xlabel("MoE layer")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, ncol=min(len(labels), 7),
               loc="outside lower center", frameon=False)
    return fig


def calibration(result: BacktestResult) -> Figure | None:
    """Expected against realised error rate per (origin, layer), for every predictor that
    states its uncertainty, one panel per horizon; the diagonal is perfect calibration."""
    named = [(n, h) for (n, h), s in result.scores.items()
             if np.isfinite(s.metrics["expected_error"]).any()]
    if not named:
        return None
    fig = _figure(figsize=(4.2 * len(result.horizons), 4.4))
    axes = fig.subplots(1, len(result.horizons), squeeze=False).ravel()
    colors = _colors(result)
    for ax, h in zip(axes, result.horizons):
        top = 0.0
        for name, horizon in named:
            if horizon != h:
                continue
            m = result.scores[(name, h)].metrics
            ok = np.isfinite(m["expected_error"]) & np.isfinite(m["error_rate"])
            stable = result.stable[ok] if result.stable is not None else np.ones(ok.sum(), bool)
            for mask, marker, label in ((stable, "o", "stable"), (~stable, "^", "transient")):
                if mask.any():
                    ax.scatter(m["expected_error"][ok][mask], m["error_rate"][ok][mask],
                               s=12, marker=marker, color=colors[name], alpha=0.6,
                               label=f"{name}, {label}")
            top = max(top, np.nanmax(m["expected_error"][ok]), np.nanmax(m["error_rate"][ok]))
        ax.plot([0, top], [0, top], color="black", lw=0.8, ls="--", label="expected = realised")
        ax.set_xlim(0, top * 1.05)
        ax.set_ylim(0, top * 1.05)
        ax.set_xlabel("expected error rate (stated with the forecast)")
        ax.set_ylabel("realised error rate")
        ax.set_title(f"{h:,}-step horizon", fontsize=10)
        _pct(ax)
        ax.xaxis.set_major_formatter(ax.yaxis.get_major_formatter())
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, ncol=3, loc="outside lower center", frameon=False)
    return fig


def placement_over_steps(placed, stable_from: int | None) -> Figure:
    """Balancedness of each placement policy over the scored steps (mean over layers, smoothed
    over a tenth of the re-plan interval), the stable state shaded."""
    fig = _figure(figsize=(8, 3.6))
    ax = fig.add_subplot()
    steps = placed.steps
    width = max(1, min(len(steps), placed.interval // 10 // max(1, int(np.median(np.diff(
        steps))) if len(steps) > 1 else 1)))
    kernel = np.ones(width) / width
    for name, series in placed.series().items():
        smooth = np.convolve(series, kernel, mode="valid")
        ax.plot(steps[width - 1:], smooth, label=name, linewidth=1.2)
    if stable_from is not None and stable_from <= steps[-1]:
        ax.axvspan(max(stable_from, steps[0]), steps[-1], color="0.92", zorder=0,
                   label="stable (model)")
    ax.set_xlabel("training step")
    ax.set_ylabel("balancedness (mean / max GPU)")
    _pct(ax, 0)
    _legend_below(fig, ax, len(placed.policies) + 1)
    return fig


def write_figures(directory: Path, result: BacktestResult, loads: Loads, rows: list[Row], *,
                  stable_from: int | None,
                  floors: dict[str, np.ndarray] | None, placement=None) -> list[FigureFile]:
    """Write every figure as PNG under ``directory`` and describe each."""
    directory.mkdir(parents=True, exist_ok=True)
    made: list[tuple[str, Figure, str]] = []
    for h in result.horizons:
        made.append((f"error_vs_origin_{h}.png",
                     error_vs_origin(result, h, loads.steps, stable_from, floors),
                     f"Error rate at each origin, {h:,}-step horizon, mean over layers; shading: "
                     "model state at that step; dashed: noise floor; dash-dotted: constant bound "
                     "(no forecast held constant over the horizon scores below it); dotted: "
                     "look-ahead reference."))
    if result.example is not None and result.example.forecasts:
        made.append(("forecast_vs_actual.png", forecast_vs_actual(result, loads),
                     f"Each predictor's forecast from step {result.example.origin:,} against the "
                     f"actual shares of the busiest experts of layer "
                     f"{result.layers[result.example.layer]}."))
    made.append(("error_by_layer.png", error_by_layer(result, rows),
                 "Error rate per layer, by horizon and state; bars: predictors; dashes: the "
                 "layer's noise floor; crosses: its constant bound."))
    figure = calibration(result)
    if figure is not None:
        made.append(("calibration.png", figure,
                     "Expected error rate (stated with each forecast) against the realised one, "
                     "per origin and layer; on the dashed line the forecast knew how wrong it "
                     "would be."))
    if placement is not None:
        made.append(("placement.png", placement_over_steps(placement, stable_from),
                     f"Balancedness (mean / max GPU tokens) of each placement policy on "
                     f"{placement.cluster.gpus} GPUs with {placement.slots} slots, mean over "
                     f"layers, re-planned every {placement.interval:,} steps; shading: the "
                     "model's stable state."))
    files = []
    for name, fig, caption in made:
        fig.savefig(directory / name)
        files.append(FigureFile(name, caption))
    return files
