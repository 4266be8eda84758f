"""`analyze_loads`: per layer, the fluctuation statistics, noise floor and transient/stable states.

One layer is processed at a time, so beyond the trace's counts only a few (steps x experts)
float arrays are alive at once. See docs/analysis.md for the method and its parameters.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

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
    def merge(cls, parts: list["Analysis"]) -> "Analysis":
        """One analysis of every layer from analyses of chunks of layers (same steps and
        settings, in layer order): per-layer results are joined, the model's segments are
        found again from all layers' labels."""
        if len(parts) == 1:
            return parts[0]
        first = parts[0]
        stable = np.concatenate([p.stable for p in parts])
        segments = segments_from_labels(stable.all(axis=0), first.steps)
        online = (None if any(p.online_stable is None for p in parts)
                  else np.concatenate([p.online_stable for p in parts]))
        return cls(
            steps=first.steps, layers=[la for p in parts for la in p.layers], stable=stable,
            model_stable_from=stable_from(segments), model_segments=segments,
            window=first.window, sensitivity=first.sensitivity,
            stable_ratio=first.stable_ratio, top_k=first.top_k,
            window_steps=first.window_steps, interval=first.interval,
            window_stats={k: np.concatenate([p.window_stats[k] for p in parts])
                          for k in first.window_stats},
            step_stats={k: np.concatenate([p.step_stats[k] for p in parts])
                        for k in first.step_stats},
            online_stable=online)

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
                  option: str = "--state-window") -> Analysis:
    """Segment every layer of ``loads`` into transient and stable states and measure each.

    ``window`` is in training steps (it holds ``loads.samples(window)`` rows of a sampled
    trace). ``progress(done, total, task)`` is called after each layer; ``option`` names the
    window's option in error messages.
    """
    n_layers, n_steps, _ = loads.counts.shape
    w = check_parameters(loads, window, sensitivity, stable_ratio, top_k, option)
    stride = max(1, w // 4)
    starts = np.arange(0, n_steps - w + 1)
    centres = starts + w // 2
    picked = np.unique(np.append(np.arange(0, len(starts), stride), len(starts) - 1))
    stable = np.zeros((n_layers, n_steps), dtype=bool)
    window_stats = {k: np.empty((n_layers, len(starts))) for k in WINDOW_STATS}
    step_stats = {k: np.empty((n_layers, n_steps)) for k in STEP_STATS}
    layers = []
    for i in range(n_layers):
        counts = loads.counts[i]
        if (counts.sum(axis=1) == 0).any():
            step = int(loads.steps[int(np.argmax(counts.sum(axis=1) == 0))])
            raise ParameterError(f"layer {loads.layers[i]} routes no tokens at step {step}")
        scale, half_sq = _layer_statistics(counts, w, top_k, stable_ratio, window_stats,
                                           step_stats, i)
        point_stable = stable_points(window_stats["excess"][i, picked],
                                     lag=-(-w // stride), sensitivity=sensitivity,
                                     stable_ratio=stable_ratio)
        stable[i] = step_labels(point_stable, starts[picked], w, n_steps)
        layers.append(_summarize_layer(loads, i, stable[i], stable[i, centres], half_sq,
                                       window_stats, step_stats, scale, window))
        del half_sq
        if progress is not None:
            progress(i + 1, n_layers, "analyzing layers")
    model_segments = segments_from_labels(stable.all(axis=0), loads.steps)
    online = online_states(loads, window=window, top_k=top_k, stable_ratio=stable_ratio)
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


def _layer_statistics(counts: np.ndarray, w: int, top_k: int, stable_ratio: float,
                      window_stats: dict, step_stats: dict, i: int) -> tuple[float, np.ndarray]:
    """Fill row ``i`` of the window and step statistics.

    Returns the layer's noise scale and the half squared successive differences of its shares
    (T-1, E), which the empirical noise floor needs once the states are known.

    ``excess`` is log(window variance / noise variance), where the noise variance is the
    multinomial one times the layer's noise scale (:func:`moetrace.states.noise.noise_scale`),
    so routing noisier than independent sampling does not read as fluctuation.
    """
    totals = counts.sum(axis=1)
    shares = counts / totals[:, None].astype(np.float64)
    for name, value in stats.step_imbalance(shares).items():
        step_stats[name][i] = value
    # the underlying shares the sampling noise is around: the window's mean (a step's own
    # shares are that plus the noise; with a few tokens per step they are 0 or 1)
    underlying = stats.centred_mean(shares, w)
    sampling = noise.multinomial_share_var(underlying, totals, top_k)
    # floored so a layer that sends every token to one expert (no sampling noise) still divides
    noise_var = np.maximum(stats.moving_mean(sampling.mean(axis=1), w), _TINY)
    del sampling
    step_stats["noise_floor"][i] = noise.multinomial_floor(underlying, totals, top_k)
    del underlying
    var = stats.windowed_variance(shares, w)
    window_stats["var_mean"][i] = var.mean(axis=1)
    window_stats["var_max"][i] = var.max(axis=1)
    window_stats["std_mean"][i] = np.sqrt(var, out=var).mean(axis=1)
    del var
    rng = stats.windowed_range(shares, w)
    window_stats["range_mean"][i] = rng.mean(axis=1)
    window_stats["range_max"][i] = rng.max(axis=1)
    del rng
    half_sq = noise.successive_half_sq_diff(shares)
    del shares
    steady = stats.moving_mean(half_sq.mean(axis=1), w - 1)
    fluct = window_stats["var_mean"][i]
    scale = noise.noise_scale(fluct, steady, noise_var, stable_ratio)
    window_stats["noise_var"][i] = scale * noise_var
    window_stats["excess"][i] = np.log(np.maximum(fluct, _TINY) / (scale * noise_var))
    return scale, half_sq


def _summarize_layer(loads: Loads, i: int, stable: np.ndarray, window_stable: np.ndarray,
                     half_sq: np.ndarray, window_stats: dict, step_stats: dict,
                     scale: float, window_steps: int) -> LayerAnalysis:
    """Segments and per-state fluctuation, imbalance and noise floor of one layer."""
    segments = segments_from_labels(stable, loads.steps)
    # enough routed tokens per expert in a window for its mean share to be a good estimate
    # of the underlying share (about 10% relative error at 100)
    window = loads.samples(window_steps)
    reliable = bool(window * loads.totals[i].mean() / loads.n_experts >= RELIABLE_TOKENS)
    floors, fluctuation, imbalance = {}, {}, {}
    for state in STATES:
        at = np.ones_like(stable) if state == "all" else (stable == (state == STABLE))
        if not at.any():
            continue
        win = np.ones_like(window_stable) if state == "all" else \
            (window_stable == (state == STABLE))
        floors[state] = NoiseFloor(
            multinomial=float(step_stats["noise_floor"][i, at].mean()),
            empirical=noise.empirical_floor(half_sq, at[1:] & at[:-1]), scale=scale,
            reliable=reliable)
        fluctuation[state] = float(window_stats["std_mean"][i, win].mean()) if win.any() \
            else float("nan")
        imbalance[state] = float(step_stats["max_mean"][i, at].mean())
    return LayerAnalysis(layer=int(loads.layers[i]), segments=segments,
                         stable_from=stable_from(segments), noise_floor=floors,
                         fluctuation=fluctuation, imbalance=imbalance, noise_scale=scale)
