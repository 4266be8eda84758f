"""`analyze_loads`: per layer, the fluctuation statistics, noise floor and transient/stable states.

One layer is processed at a time, and within it one step range at a time (with the overlap
its windows need: moetrace.states.stats.step_ranges), so beyond the trace's counts only a few
float arrays of one range are alive at once, and the time is linear in the steps. See
docs/analysis.md for the method and its parameters.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace

import numpy as np

from moetrace.defaults import SENSITIVITY as DEFAULT_SENSITIVITY
from moetrace.defaults import STABLE_RATIO as DEFAULT_STABLE_RATIO
from moetrace.defaults import STATE_WINDOW as DEFAULT_WINDOW
from moetrace.errors import ParameterError
from moetrace.progress import Progress
from moetrace.states import noise, stats
from moetrace.states.noise import NoiseFloor
from moetrace.states.online import online_states
from moetrace.states.segment import (
    STABLE,
    TRANSIENT,
    Segment,
    segments_from_labels,
    stable_from,
    stable_points,
    step_labels,
)
from moetrace.trace.shares import Loads

STATES = (TRANSIENT, STABLE, "all")
_TINY = 1e-300
#: routed tokens per expert in a state window below which a noise floor is called unreliable
RELIABLE_TOKENS = 100

#: per-window statistics kept for --out, each (layers, windows)
WINDOW_STATS = ("var_mean", "var_max", "range_mean", "range_max", "std_mean", "noise_var",
                "excess")
#: per-step statistics kept for --out and the report, each (layers, steps)
STEP_STATS = ("max_mean", "cv", "entropy", "top10_share", "noise_floor")


@dataclass
class LayerAnalysis:
    """One layer's states, fluctuation, imbalance and noise floor (states with steps only)."""

    layer: int
    segments: list[Segment]
    stable_from: int | None
    noise_floor: dict[str, NoiseFloor]
    fluctuation: dict[str, float]  # mean windowed std of the shares, over the state's windows
    imbalance: dict[str, float]  # mean max/mean load over the state's steps
    noise_scale: float = 1.0  # empirical noise variance over the multinomial one (>= 1)
    #: the online detector's view at the last step (moetrace/states/online.py)
    online_stable_from: int | None = None  # onset of the stable state it believes in
    online_detected_at: int | None = None  # step at which it called that stable state
    online_confidence: float = 0.0
    online_calls: list = field(default_factory=list)  # (called at, onset, stable?) in order

    @property
    def detection_delay(self) -> int | None:
        """Steps from the hindsight stable onset to the online call (online minus
        hindsight); None unless both see the layer stable at the end."""
        if self.stable_from is None or self.online_detected_at is None:
            return None
        return self.online_detected_at - self.stable_from


@dataclass
class Analysis:
    """The result of :func:`analyze_loads`; arrays are indexed [layer position, step position]."""

    steps: np.ndarray  # (T,) step numbers
    layers: list[LayerAnalysis]
    stable: np.ndarray  # (L, T) bool: the layer is in the stable state at that step
    model_stable_from: int | None
    model_segments: list[Segment]
    window: int  # training steps
    sensitivity: float
    stable_ratio: float
    top_k: int
    window_steps: np.ndarray  # (W,) the centre step of each window
    interval: int  # the trace's sampling interval in training steps
    window_stats: dict[str, np.ndarray] = field(repr=False)  # name -> (L, W), see WINDOW_STATS
    step_stats: dict[str, np.ndarray] = field(repr=False)  # name -> (L, T), see STEP_STATS
    online_stable: np.ndarray | None = field(default=None, repr=False)  # (L, T) causal labels
    #: what the settings were shrunk to, for a short trace (moetrace.pipeline.span)
    notes: list[str] = field(default_factory=list)

    @classmethod
    def merge(cls, parts: Iterable["Analysis"], n_layers: int | None = None) -> "Analysis":
        """One analysis of every layer from analyses of chunks of layers (same steps and
        settings, in layer order): per-layer results are copied into arrays of all
        ``n_layers`` layers (default: the parts' own, all held at once) made once, as the
        parts come (an iterator of them is consumed one at a time); the model's segments are
        found again from all layers' labels."""
        parts = iter(parts)
        part = next(parts)
        if n_layers is None:
            rest = list(parts)
            n_layers = len(part.layers) + sum(len(p.layers) for p in rest)
            parts = iter(rest)
        if n_layers == len(part.layers):
            return part
        head = replace(part, layers=[], stable=part.stable[:0], window_stats={}, step_stats={},
                       online_stable=None)  # the settings and steps, none of the arrays
        stable = np.empty((n_layers,) + part.stable.shape[1:], dtype=bool)
        online = None if part.online_stable is None else np.empty_like(stable)
        window_stats = {k: np.empty((n_layers,) + v.shape[1:], dtype=v.dtype)
                        for k, v in part.window_stats.items()}
        step_stats = {k: np.empty((n_layers,) + v.shape[1:], dtype=v.dtype)
                      for k, v in part.step_stats.items()}
        layers, at = [], 0
        while part is not None:
            rows = slice(at, at + len(part.layers))
            stable[rows] = part.stable
            if online is not None and part.online_stable is None:
                online = None
            elif online is not None:
                online[rows] = part.online_stable
            for name, array in window_stats.items():
                array[rows] = part.window_stats[name]
            for name, array in step_stats.items():
                array[rows] = part.step_stats[name]
            layers += part.layers
            at = rows.stop
            part = None  # let go of this chunk before the next is asked for
            part = next(parts, None)
        if at != n_layers:
            raise ValueError(f"Analysis.merge: the parts hold {at} layers, not {n_layers}")
        segments = segments_from_labels(stable.all(axis=0), head.steps)
        return replace(head, layers=layers, stable=stable,
                       model_stable_from=stable_from(segments), model_segments=segments,
                       window_stats=window_stats, step_stats=step_stats,
                       online_stable=online, notes=[])

    def floors(self) -> dict[str, np.ndarray]:
        """State (transient, stable, all) -> (L,) the per-step error-rate noise floor of each
        layer in that state (NaN where the layer never is)."""
        return {state: np.array([layer.noise_floor[state].value if state in layer.noise_floor
                                 else np.nan for layer in self.layers])
                for state in STATES}

    def labels(self, states: str = "hindsight") -> np.ndarray:
        """(L, T) stable labels: ``hindsight`` (the segmentation of the whole trace) or
        ``online`` (what a live job believed at each step)."""
        if states == "online":
            return self.online_stable
        if states != "hindsight":
            raise ParameterError(f"--states takes hindsight or online, got '{states}'")
        return self.stable

    def describe_steps(self) -> str:
        """"5,000 steps", or for a sampled trace "5,001 training steps (501 samples, every 10)"."""
        span = int(self.steps[-1] - self.steps[0]) + self.interval
        if self.interval == 1 and span == len(self.steps):
            return f"{len(self.steps):,} steps"
        return (f"{span:,} training steps ({len(self.steps):,} samples, every "
                f"{self.interval:,})")

    @property
    def verdict(self) -> str:
        """One line for the whole model: when it became stable, or which layers still fluctuate."""
        still = [la.layer for la in self.layers if la.stable_from is None]
        if still:
            names = _join([str(x) for x in still])
            noun = "layer" if len(still) == 1 else "layers"
            verb = "is" if len(still) == 1 else "are"
            return f"{noun} {names} {verb} still fluctuating at the last step"
        if self.model_stable_from == int(self.steps[0]):
            return "stable from the first step in all layers"
        return f"stable from step {self.model_stable_from} in all layers"


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def check_parameters(loads: Loads, window: int, sensitivity: float, stable_ratio: float,
                     top_k: int, option: str = "--state-window") -> int:
    """Raise ParameterError for settings the data cannot support; the window in samples."""
    if window < 2:
        raise ParameterError(f"{option} must be at least 2 steps, got {window}")
    w = loads.samples(window)
    if w < 2:
        raise ParameterError(f"{option} {window} steps holds {w} sample at this trace's sampling "
                             f"interval of {loads.interval} steps; give at least "
                             f"{2 * loads.interval} steps")
    if loads.n_steps < w:
        raise ParameterError(f"the trace covers {loads.span:,} steps ({loads.n_steps} samples), "
                             f"fewer than the state window of {window} steps ({w} samples); "
                             f"pass a smaller {option}")
    if not sensitivity > 0:
        raise ParameterError(f"--sensitivity must be positive, got {sensitivity}")
    if not stable_ratio > 1:
        raise ParameterError(f"--stable-ratio must be above 1, got {stable_ratio}")
    if top_k < 1:
        raise ParameterError(f"top-k must be at least 1, got {top_k}")
    return w


def analyze_loads(loads: Loads, *, window: int = DEFAULT_WINDOW,
                  sensitivity: float = DEFAULT_SENSITIVITY,
                  stable_ratio: float = DEFAULT_STABLE_RATIO, top_k: int = 1,
                  progress: Progress | None = None,
                  option: str = "--state-window", statistics: bool = True) -> Analysis:
    """Segment every layer of ``loads`` into transient and stable states and measure each.

    ``window`` is in training steps (it holds ``loads.samples(window)`` rows of a sampled
    trace). ``progress(done, total, task)`` is called after each layer; ``option`` names the
    window's option in error messages. ``statistics``: keep the per-step and per-window
    statistics (``Analysis.step_stats``, ``window_stats``: what ``analyze --out`` writes);
    without them the analysis of a long trace is a few bits per step and layer.

    Each layer's statistics are computed a step range at a time (stats.step_ranges), from
    its counts: beyond them, no array of the layer's whole steps x experts is ever made.
    """
    n_layers, n_steps, n_experts = loads.counts.shape
    w = check_parameters(loads, window, sensitivity, stable_ratio, top_k, option)
    stride = max(1, w // 4)
    starts = np.arange(0, n_steps - w + 1)
    centres = starts + w // 2
    picked = np.unique(np.append(np.arange(0, len(starts), stride), len(starts) - 1))
    stable = np.zeros((n_layers, n_steps), dtype=bool)
    window_stats = {k: np.empty((n_layers, len(starts))) for k in WINDOW_STATS} \
        if statistics else {}
    step_stats = {k: np.empty((n_layers, n_steps)) for k in STEP_STATS} if statistics else {}
    layers = []
    for i in range(n_layers):
        counts, totals = loads.counts[i], loads.totals[i]
        if (totals == 0).any():
            step = int(loads.steps[int(np.argmax(totals == 0))])
            raise ParameterError(f"layer {loads.layers[i]} routes no tokens at step {step}")
        own = _layer_statistics(counts, totals, w, top_k, stable_ratio)
        point_stable = stable_points(own.window["excess"][picked], lag=-(-w // stride),
                                     sensitivity=sensitivity, stable_ratio=stable_ratio)
        stable[i] = step_labels(point_stable, starts[picked], w, n_steps)
        layers.append(_summarize_layer(loads, i, stable[i], stable[i, centres], own, window,
                                       w))
        for name in window_stats:
            window_stats[name][i] = own.window[name]
        for name in step_stats:
            step_stats[name][i] = own.step[name]
        if progress is not None:
            progress(i + 1, n_layers, "analyzing layers")
    model_segments = segments_from_labels(stable.all(axis=0), loads.steps)
    online = online_states(loads, window=window, top_k=top_k, stable_ratio=stable_ratio,
                           chunk=max(1, stats.RANGE_CELLS // (2 * max(1, n_layers * n_experts))))
    for i, la in enumerate(layers):
        la.online_stable_from, la.online_detected_at = online.stable_from[i], \
            online.detected_at[i]
        la.online_confidence, la.online_calls = online.confidence[i], online.calls[i]
    return Analysis(
        steps=loads.steps, layers=layers, stable=stable,
        model_stable_from=stable_from(model_segments), model_segments=model_segments,
        window=window, sensitivity=sensitivity, stable_ratio=stable_ratio, top_k=top_k,
        interval=loads.interval,
        window_steps=loads.steps[centres], window_stats=window_stats, step_stats=step_stats,
        online_stable=online.stable)


@dataclass
class _LayerStatistics:
    """One layer's per-step and per-window statistics (:data:`STEP_STATS`,
    :data:`WINDOW_STATS`), its noise scale, and each expert's half squared successive
    differences summed over all the layer's pairs of steps (the empirical floor's)."""

    step: dict[str, np.ndarray]
    window: dict[str, np.ndarray]
    scale: float
    half_sq_sums: np.ndarray


def _range_shares(counts: np.ndarray, totals: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """(hi - lo, E) float64 shares of rows ``lo .. hi-1``."""
    return counts[lo:hi] / totals[lo:hi, None].astype(np.float64)


def _layer_statistics(counts: np.ndarray, totals: np.ndarray, w: int, top_k: int,
                      stable_ratio: float) -> _LayerStatistics:
    """The window and step statistics of one layer's (T, E) ``counts``, a step range at a
    time: each range's shares are made with the ``w`` rows on either side its windows reach,
    and every per-range result is written into the layer's preallocated (T,) or (W,) arrays.

    ``excess`` is log(window variance / noise variance), where the noise variance is the
    multinomial one times the layer's noise scale (:func:`moetrace.states.noise.noise_scale`),
    so routing noisier than independent sampling does not read as fluctuation.
    """
    n, n_experts = counts.shape
    n_windows = n - w + 1
    step = {k: np.empty(n) for k in STEP_STATS}
    window = {k: np.empty(n_windows) for k in WINDOW_STATS}
    sampling = np.empty(n)  # mean multinomial share variance over experts, per step
    half_sq_mean = np.empty(n - 1)  # mean half squared change over experts, per pair of steps
    half_sq_sums = np.zeros(n_experts)
    for a, b in stats.step_ranges(n, n_experts, w):
        lo, hi = max(0, a - w), min(n, b + w)
        shares = _range_shares(counts, totals, lo, hi)
        for name, value in stats.step_imbalance(shares[a - lo:b - lo]).items():
            step[name][a:b] = value
        # the underlying shares the sampling noise is around: the window's mean (a step's own
        # shares are that plus the noise; with a few tokens per step they are 0 or 1)
        underlying = stats.centred_mean(shares, w, slice(a, b), first=lo, length=n)
        sampling[a:b] = noise.multinomial_share_var(underlying, totals[a:b], top_k).mean(axis=1)
        step["noise_floor"][a:b] = noise.multinomial_floor(underlying, totals[a:b], top_k)
        del underlying
        last = min(b, n_windows)  # windows a .. last-1 start in this range
        if a < last:
            rows = shares[a - lo:last + w - 1 - lo]
            var = stats.windowed_variance(rows, w)
            window["var_mean"][a:last] = var.mean(axis=1)
            window["var_max"][a:last] = var.max(axis=1)
            window["std_mean"][a:last] = np.sqrt(var, out=var).mean(axis=1)
            del var
            rng = stats.windowed_range(rows, w)
            window["range_mean"][a:last] = rng.mean(axis=1)
            window["range_max"][a:last] = rng.max(axis=1)
            del rng
        pairs = min(b, n - 1)  # pairs (t, t+1) for t in a .. pairs-1
        if a < pairs:
            half_sq = noise.successive_half_sq_diff(shares[a - lo:pairs + 1 - lo])
            half_sq_mean[a:pairs] = half_sq.mean(axis=1)
            half_sq_sums += half_sq.sum(axis=0)
            del half_sq
        del shares
    # floored so a layer that sends every token to one expert (no sampling noise) still divides
    noise_var = np.maximum(stats.moving_mean(sampling, w), _TINY)
    steady = stats.moving_mean(half_sq_mean, w - 1)
    fluct = window["var_mean"]
    scale = noise.noise_scale(fluct, steady, noise_var, stable_ratio)
    window["noise_var"] = scale * noise_var
    window["excess"] = np.log(np.maximum(fluct, _TINY) / (scale * noise_var))
    return _LayerStatistics(step, window, scale, half_sq_sums)


def _state_half_sq_sums(counts: np.ndarray, totals: np.ndarray, w: int,
                        pairs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each expert's half squared successive differences summed over the pairs of steps
    selected by each (T-1,) bool mask of ``pairs``: a second pass over the layer's step
    ranges, once its states are known."""
    n, n_experts = counts.shape
    sums = {name: np.zeros(n_experts) for name in pairs}
    for a, b in stats.step_ranges(n, n_experts, w):
        stop = min(b, n - 1)
        if a >= stop:
            continue
        half_sq = noise.successive_half_sq_diff(_range_shares(counts, totals, a, stop + 1))
        for name, mask in pairs.items():
            sums[name] += half_sq[mask[a:stop]].sum(axis=0)
    return sums


def _summarize_layer(loads: Loads, i: int, stable: np.ndarray, window_stable: np.ndarray,
                     own: _LayerStatistics, window_steps: int, w: int) -> LayerAnalysis:
    """Segments and per-state fluctuation, imbalance and noise floor of one layer."""
    segments = segments_from_labels(stable, loads.steps)
    # enough routed tokens per expert in a window for its mean share to be a good estimate
    # of the underlying share (about 10% relative error at 100)
    window = loads.samples(window_steps)
    totals = loads.totals[i]
    reliable = bool(window * totals.mean() / loads.n_experts >= RELIABLE_TOKENS)
    present = [state for state in STATES if state == "all" or (stable == (state == STABLE)).any()]
    pairs = {state: ((stable[1:] & stable[:-1]) if state == STABLE
                     else (~stable[1:] & ~stable[:-1]))
             for state in present if state != "all" and len(present) == 3}
    sums = {"all": own.half_sq_sums, **_state_half_sq_sums(loads.counts[i], totals, w, pairs)}
    counts = {"all": len(stable) - 1, **{state: int(mask.sum()) for state, mask in pairs.items()}}
    if len(present) == 2:  # one state throughout: its pairs are all the pairs
        sums[present[0]], counts[present[0]] = sums["all"], counts["all"]
    floors, fluctuation, imbalance = {}, {}, {}
    for state in STATES:
        if state not in present:
            continue
        at = np.ones_like(stable) if state == "all" else (stable == (state == STABLE))
        win = np.ones_like(window_stable) if state == "all" else \
            (window_stable == (state == STABLE))
        floors[state] = NoiseFloor(
            multinomial=float(own.step["noise_floor"][at].mean()),
            empirical=noise.empirical_floor_of(sums[state], counts[state]), scale=own.scale,
            reliable=reliable)
        fluctuation[state] = float(own.window["std_mean"][win].mean()) if win.any() \
            else float("nan")
        imbalance[state] = float(own.step["max_mean"][at].mean())
    return LayerAnalysis(layer=int(loads.layers[i]), segments=segments,
                         stable_from=stable_from(segments), noise_floor=floors,
                         fluctuation=fluctuation, imbalance=imbalance, noise_scale=own.scale)
