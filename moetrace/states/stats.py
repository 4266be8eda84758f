"""Fluctuation and imbalance statistics: pure functions over one layer's steps x experts shares.

Windows are by step *position* (a gap in the step numbers is not filled in): window ``i``
covers positions ``i .. i+w-1``, so a series of ``T`` steps has ``T - w + 1`` windows. Every
function here takes and returns plain numpy arrays and keeps at most a few copies of its
input alive; the analysis calls them a step range at a time (:func:`step_ranges`), so a copy
is of one range, never of a whole layer.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import maximum_filter1d, minimum_filter1d
from scipy.special import entr

#: Share of experts counted as "the busiest" by :func:`step_imbalance` (``top10_share``).
TOP_FRACTION = 0.10
#: (steps x experts) cells of one step range of a layer's statistics (:func:`step_ranges`):
#: each float64 temporary of a range is 16 MiB, and a range stays in the processor's caches
#: far better than a whole layer (whose column-wise passes made the analysis superlinear)
RANGE_CELLS = 1 << 21


def _window_sums(x: np.ndarray, w: int) -> np.ndarray:
    """Sum of ``x`` over every window of ``w`` rows (axis 0), via one cumulative sum."""
    c = np.cumsum(x, axis=0)
    out = c[w - 1:].copy()
    out[1:] -= c[:-w]
    return out


def moving_mean(x: np.ndarray, w: int) -> np.ndarray:
    """Mean of ``x`` over every window of ``w`` rows along axis 0 (``T - w + 1`` rows)."""
    return _window_sums(np.asarray(x, dtype=np.float64), w) / w


def centred_mean(x: np.ndarray, w: int, rows: slice | None = None, *, first: int = 0,
                 length: int | None = None) -> np.ndarray:
    """Mean of ``x`` over the ``w`` rows centred on each row (fewer at the ends), same shape.

    Over a step range: ``x`` holds rows ``first ..`` of a series of ``length`` rows (default:
    ``x`` is the whole series) and ``rows`` (positions in the series, default all of ``x``)
    are the rows whose means are wanted; ``x`` must hold every row their windows reach."""
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[0] if length is None else length
    rows = np.arange(first, first + x.shape[0]) if rows is None else \
        np.arange(rows.start, rows.stop)
    cum = np.concatenate([np.zeros_like(x[:1]), np.cumsum(x, axis=0)])
    lo = np.clip(rows - w // 2, 0, n)
    hi = np.clip(rows - w // 2 + w, 0, n)
    return (cum[hi - first] - cum[lo - first]) / (hi - lo)[:, None]


def step_ranges(n_steps: int, n_experts: int, w: int,
                cells: int | None = None) -> list[tuple[int, int]]:
    """Consecutive ranges of step positions that the statistics of one layer are computed a
    range at a time over (each read with the overlap its windows need): about ``cells``
    (steps x experts) per range, and at least four windows, so that the overlap stays small.
    The ranges depend on the layer's shape and window only, never on how the work is split,
    so a layer's statistics are the same numbers however its trace is chunked."""
    size = max(4 * w, (cells or RANGE_CELLS) // max(1, n_experts))
    return [(a, min(n_steps, a + size)) for a in range(0, n_steps, size)]


def windowed_variance(shares: np.ndarray, w: int) -> np.ndarray:
    """Per-expert sample variance (ddof=1) of the shares over each window, shape (T-w+1, E).

    Shares are centred on their column means first, so the one-pass formula keeps its
    precision over tens of thousands of steps.
    """
    x = shares - shares.mean(axis=0)
    s1 = _window_sums(x, w)
    np.square(x, out=x)
    s2 = _window_sums(x, w)
    del x
    s1 *= s1
    s1 /= w
    s2 -= s1
    s2 /= max(w - 1, 1)
    return np.maximum(s2, 0.0, out=s2)


def windowed_range(shares: np.ndarray, w: int) -> np.ndarray:
    """Per-expert range (max - min) of the shares over each window, shape (T-w+1, E)."""
    # a centred filter of size w puts window i .. i+w-1 at row i + w//2
    rows = slice(w // 2, w // 2 + shares.shape[0] - w + 1)
    top = maximum_filter1d(shares, size=w, axis=0, mode="nearest")[rows]
    top -= minimum_filter1d(shares, size=w, axis=0, mode="nearest")[rows]
    return top


def step_imbalance(shares: np.ndarray) -> dict[str, np.ndarray]:
    """Imbalance of each step of a (T, E) share array, each measure shape (T,).

    ``max_mean``: busiest expert's load over the mean load (sets the step time under expert
    parallelism); ``cv``: coefficient of variation of the loads; ``entropy``: entropy of the
    shares over log(E) (1 = perfectly even); ``top10_share``: share of tokens on the busiest
    10% of experts (at least one).
    """
    n_experts = shares.shape[1]
    top = max(1, int(np.ceil(TOP_FRACTION * n_experts)))
    # entr(p) = -p log p, and 0 at p = 0
    entropy = entr(shares).sum(axis=1) / np.log(n_experts) if n_experts > 1 else \
        np.ones(shares.shape[0])
    busiest = np.partition(shares, n_experts - top, axis=1)[:, n_experts - top:].sum(axis=1)
    return {
        "max_mean": shares.max(axis=1) * n_experts,
        "cv": shares.std(axis=1) * n_experts,
        "entropy": entropy,
        "top10_share": busiest,
    }
