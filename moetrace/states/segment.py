"""Boundary search: split a layer's excess-fluctuation series into transient and stable runs.

The input is one value per window, the log of the windowed share variance over the layer's
own noise variance (0 means "moves no more than noise"). The method, deterministic and
documented in docs/analysis.md:

1. Binary segmentation of that series into pieces of constant mean (least squares), splitting
   while a split lowers the cost by more than a penalty. The penalty scales with the series'
   own noise (estimated from differences between non-overlapping windows), so it means the
   same for 16 or 128 experts, 100k or 1M tokens per step.
2. Each piece is stable if its mean excess is at most ``log(stable_ratio)``.
3. A step is stable if a stable window covers it (:func:`step_labels`); runs of equal state
   become :class:`Segment` objects.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from moetrace.defaults import STABLE, TRANSIENT  # noqa: F401  (re-exported)

_MAD_TO_SD = 1.4826  # median absolute deviation -> standard deviation of a normal


@dataclass(frozen=True)
class Segment:
    """Steps ``start <= step < end`` (step numbers) of one layer, in one state."""

    start: int
    end: int
    state: str


def _cost(cs: np.ndarray, cs2: np.ndarray, a, b):
    """Least-squares cost of fitting one mean to y[a:b] (vectorised over a or b)."""
    s = cs[b] - cs[a]
    return (cs2[b] - cs2[a]) - s * s / (b - a)


def binary_segmentation(y: np.ndarray, penalty: float, min_size: int) -> list[int]:
    """Sorted indices where a new constant-mean piece of ``y`` starts (0 and len(y) excluded)."""
    n = len(y)
    cs = np.concatenate([[0.0], np.cumsum(y)])
    cs2 = np.concatenate([[0.0], np.cumsum(y * y)])
    found, todo = [], [(0, n)]
    while todo:
        a, b = todo.pop()
        if b - a < 2 * min_size:
            continue
        ks = np.arange(a + min_size, b - min_size + 1)
        gain = _cost(cs, cs2, a, b) - _cost(cs, cs2, a, ks) - _cost(cs, cs2, ks, b)
        best = int(np.argmax(gain))
        if gain[best] > penalty:
            k = int(ks[best])
            found.append(k)
            todo += [(a, k), (k, b)]
    return sorted(found)


def series_noise_sd(y: np.ndarray, lag: int) -> float:
    """Robust noise level of ``y`` from differences ``lag`` apart (independent windows)."""
    lag = max(1, min(lag, len(y) - 1))
    d = y[lag:] - y[:-lag]
    if len(d) == 0:
        return 0.0
    return _MAD_TO_SD * float(np.median(np.abs(d - np.median(d)))) / np.sqrt(2.0)


def stable_points(excess: np.ndarray, *, lag: int, sensitivity: float,
                  stable_ratio: float) -> np.ndarray:
    """Stable (True) or transient for each point of the log-excess series ``excess``.

    ``lag`` is how many points apart two windows stop overlapping; it is also the shortest
    piece. Higher ``sensitivity`` means a lower penalty, hence more (shorter) pieces.
    """
    n = len(excess)
    sd = series_noise_sd(excess, lag)
    # a series that is exactly flat still needs a positive penalty
    sd = max(sd, 1e-3)
    penalty = 2.0 * lag * sd * sd * np.log(max(n, 2)) / sensitivity
    breaks = [0, *binary_segmentation(excess, penalty, max(1, lag)), n]
    stable = np.empty(n, dtype=bool)
    threshold = np.log(stable_ratio)
    for a, b in zip(breaks[:-1], breaks[1:]):
        stable[a:b] = excess[a:b].mean() <= threshold
    return stable


def step_labels(window_stable: np.ndarray, starts: np.ndarray, window: int,
                n_steps: int) -> np.ndarray:
    """A step is stable if some stable window covers it, transient otherwise.

    A stable window moved no more than noise over its whole span, so all its steps are
    stable; a transient window only says that *some* of its steps moved. Labelling by
    coverage keeps a boundary where the quiet windows begin (or end, for a re-entry) instead
    of half a window into the quiet stretch.
    """
    edges = np.zeros(n_steps + 1, dtype=np.int64)
    np.add.at(edges, starts[window_stable], 1)
    np.add.at(edges, np.minimum(starts[window_stable] + window, n_steps), -1)
    return np.cumsum(edges[:-1]) > 0


def segments_from_labels(stable: np.ndarray, steps: np.ndarray) -> list[Segment]:
    """Runs of equal state as Segments in step numbers; the last ends one past the last step."""
    if len(stable) == 0:
        return []
    change = np.nonzero(stable[1:] != stable[:-1])[0] + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change, [len(stable)]])
    bounds = np.append(steps, steps[-1] + 1)
    return [Segment(int(bounds[a]), int(bounds[b]), STABLE if stable[a] else TRANSIENT)
            for a, b in zip(starts, ends)]


def stable_from(segments: list[Segment]) -> int | None:
    """First step of the final stable segment, or None if the series ends transient."""
    if not segments or segments[-1].state != STABLE:
        return None
    return segments[-1].start
