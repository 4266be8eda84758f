"""Per-layer figures of an analysis: expert shares over steps and the fluctuation curves.

In the spirit of the paper's figures: a heatmap of every expert's share with the states
shaded, then the windowed variance and range (mean and max over experts) with the boundary
marked. Drawn with matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from moetrace.states.analysis import Analysis  # noqa: E402
from moetrace.states.segment import TRANSIENT  # noqa: E402

#: at most this many columns in a heatmap: longer traces are averaged over bins of steps
MAX_COLUMNS = 1000
_TRANSIENT_COLOUR = "#f4a582"


def binned_shares(counts: np.ndarray,
                  max_columns: int = MAX_COLUMNS) -> tuple[np.ndarray, np.ndarray]:
    """Shares of one layer's (T, E) counts averaged over up to ``max_columns`` step bins.

    Returns (first step position of each bin, shares (bins, E)).
    """
    n = counts.shape[0]
    edges = np.unique(np.linspace(0, n, min(n, max_columns) + 1).astype(np.int64))[:-1]
    sums = np.add.reduceat(counts, edges, axis=0).astype(np.float64)
    return edges, sums / sums.sum(axis=1, keepdims=True)


def _shade(ax, analysis: Analysis, i: int) -> None:
    for seg in analysis.layers[i].segments:
        if seg.state == TRANSIENT:
            ax.axvspan(seg.start, seg.end, color=_TRANSIENT_COLOUR, alpha=0.25, lw=0)
    if analysis.layers[i].stable_from is not None:
        ax.axvline(analysis.layers[i].stable_from, color="black", ls="--", lw=1)


def layer_figure(analysis: Analysis, i: int, counts: np.ndarray, path: Path) -> Path:
    """Write the figure of the ``i``-th analysed layer to ``path`` (PNG)."""
    la = analysis.layers[i]
    steps, wsteps = analysis.steps, analysis.window_steps
    fig, axes = plt.subplots(3, 1, figsize=(10, 8), sharex=True,
                             gridspec_kw={"height_ratios": [2, 1, 1]})
    edges, shares = binned_shares(counts)
    x = np.append(steps[edges], steps[-1] + 1)
    mesh = axes[0].pcolormesh(x, np.arange(shares.shape[1] + 1), shares.T, cmap="viridis",
                              shading="flat", vmax=float(np.quantile(shares, 0.99)))
    fig.colorbar(mesh, ax=axes, location="right", fraction=0.03,
                 label="share of tokens (colours capped at the 99th percentile)")
    axes[0].set_ylabel("expert")
    for seg in la.segments:
        if seg.state == TRANSIENT:
            axes[0].axvspan(seg.start, seg.end, ymin=0.97, ymax=1.0, color=_TRANSIENT_COLOUR)
    if la.stable_from is not None:
        axes[0].axvline(la.stable_from, color="white", ls="--", lw=1)
    stable_text = "never" if la.stable_from is None else f"step {la.stable_from}"
    axes[0].set_title(f"layer {la.layer}: expert shares (transient shaded); stable from "
                      f"{stable_text}")
    for ax, name, label in ((axes[1], "var", "windowed variance"),
                            (axes[2], "range", "windowed range")):
        ax.plot(wsteps, analysis.window_stats[f"{name}_mean"][i], lw=1, label="mean over experts")
        ax.plot(wsteps, analysis.window_stats[f"{name}_max"][i], lw=1, label="max over experts")
        ax.set_yscale("log")
        ax.set_ylabel(label)
        _shade(ax, analysis, i)
        ax.legend(loc="upper right", fontsize=8)
    axes[1].plot(wsteps, analysis.window_stats["noise_var"][i], lw=1, color="grey", ls=":",
                 label="noise variance")
    axes[1].legend(loc="upper right", fontsize=8)
    axes[2].set_xlabel(f"step (window of {analysis.window} steps, at its centre)")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
