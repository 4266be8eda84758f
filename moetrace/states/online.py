"""Online (causal) state detection: is each layer stable *now*, from the steps seen so far.

:class:`OnlineDetector` takes a trace's counts a block of steps at a time (any block size,
one step included) and keeps per layer only what the decision needs: the last ``window``
samples of shares (a ring buffer) and a bounded history of its noise estimates, so memory
does not grow with the run and each step costs O(experts) per layer, amortised. A batch run
over a finished trace (:func:`online_states`) is the same object fed blocks of ``chunk``
samples in a loop, so the two cannot disagree (tested), and the label at step t never
depends on a step after t.

The statistic is the hindsight analysis's (docs/analysis.md), computed causally: every
``stride`` samples, over the last ``window`` samples, the mean over experts of each share's
variance, against the noise variance: the layer's step-to-step noise (half the mean squared
successive difference) and the multinomial sampling variance times the layer's noise scale,
whichever is smaller (the scale, how much noisier than independent sampling the layer's
routing is, is estimated from the noise seen so far: the median ratio over quiet windows,
capped by the low quantile over all windows). A window is *quiet* when its variance is at
most ``stable_ratio`` times the noise variance, *loud* when it is above ``enter_ratio``
times it.

Decisions, with hysteresis so that one window does not flip the state:

* a transient layer is called **stable** once its windows have been quiet for ``confirm``
  training steps in a row; the onset it believes in is the first step of the first quiet
  window of that run;
* a stable layer is called **transient** again once its windows have been loud for
  ``confirm`` steps in a row (a re-entry); the onset is the first step of the first loud
  window.

A call is never revised backwards: the label of a step is the state believed when that step
was seen. ``confidence`` is the share of the last calls' windows that agree with the state.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from moetrace.defaults import STABLE_RATIO, STATE_WINDOW
from moetrace.errors import ParameterError
from moetrace.trace.shares import Loads

#: windows must be loud (variance above this multiple of the noise variance) to call a stable
#: layer transient again: well above the quiet threshold, so noise does not flip it back
ENTER_RATIO = 4.0
#: training steps a run of quiet (or loud) windows must last before the state is called
CONFIRM = 300
#: noise ratios kept per layer (decimated when full): bounded memory over any run length
HISTORY = 512
#: quantile of all windows' noise ratios that caps the noise scale (as in the hindsight
#: analysis: noise cannot exceed what the quietest windows show)
CAP_QUANTILE = 0.05


@dataclass
class LayerState:
    """What the detector believes about one layer now."""

    stable: bool = False
    onset: int | None = None  # first step of the current state (None: the trace's start)
    called_at: int | None = None  # step at which the current state was called
    confidence: float = 0.0
    history: list[tuple[int, int, bool]] = field(default_factory=list)  # (called, onset, stable)

    @property
    def stable_from(self) -> int | None:
        """Onset of the stable state believed now, or None while transient."""
        return self.onset if self.stable else None


class OnlineDetector:
    """Streaming transient/stable detector for every layer of a trace (see module doc).

    ``window``, ``confirm`` are training steps; ``interval`` the trace's sampling interval
    (a window of 100 steps holds 10 samples of a trace of every 10th step).
    """

    def __init__(self, n_layers: int, n_experts: int, *, window: int = STATE_WINDOW,
                 top_k: int = 1, stable_ratio: float = STABLE_RATIO,
                 enter_ratio: float = ENTER_RATIO, confirm: int = CONFIRM, interval: int = 1):
        if window < 2 or confirm < 1 or not 1 < stable_ratio < enter_ratio or top_k < 1:
            raise ParameterError("online detector: needs window >= 2 steps, confirm >= 1 step, "
                                 "1 < stable_ratio < enter_ratio and top_k >= 1")
        self.w = max(2, int(round(window / interval)))
        self.stride = max(1, self.w // 4)
        self.confirm_rows = max(1, int(round(confirm / interval)))
        self.window, self.confirm, self.interval = window, confirm, interval
        self.top_k, self.stable_ratio, self.enter_ratio = top_k, stable_ratio, enter_ratio
        self.n_layers, self.n_experts = n_layers, n_experts
        self.rows = 0  # samples seen
        self._shares = np.zeros((n_layers, self.w, n_experts))
        self._sampling = np.zeros((n_layers, self.w))  # mean multinomial variance per sample
        self._hsd = np.zeros((n_layers, self.w))  # half squared change from the previous
        self._steps = np.zeros(self.w, dtype=np.int64)
        self._last = None  # (L, E) shares of the previous sample
        self._ratios = [np.empty(0) for _ in range(n_layers)]  # noise / sampling per window
        self._white = [np.empty(0, dtype=bool) for _ in range(n_layers)]
        self._run_start = np.full(n_layers, -1, dtype=np.int64)  # step a quiet/loud run began
        self._run_rows = np.zeros(n_layers, dtype=np.int64)
        self._agree: list[list[bool]] = [[] for _ in range(n_layers)]
        self._state_before = [False] * n_layers  # the state at the end of the last block
        self.layers = [LayerState() for _ in range(n_layers)]

    # -- feeding ---------------------------------------------------------------------------
    def update(self, steps: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """Feed samples ``steps`` (n,) with ``counts`` (L, n, E); returns (L, n) bool, the
        state believed at each of these steps (True = stable).

        The block is processed with numpy: windows are evaluated every ``stride`` samples
        (at fixed positions in the run, so the block size never changes a result), and the
        decisions run once per evaluation, not once per step."""
        steps = np.asarray(steps, dtype=np.int64)
        counts = np.asarray(counts)
        n = len(steps)
        if counts.ndim != 3 or counts.shape[0] != self.n_layers or \
                counts.shape[2] != self.n_experts or counts.shape[1] != n:
            raise ParameterError(f"online detector: counts must be (layers, steps, experts) = "
                                 f"({self.n_layers}, {n}, {self.n_experts})")
        if n == 0:
            return np.zeros((self.n_layers, 0), dtype=bool)
        totals = counts.sum(axis=2).astype(np.float64)
        if (totals <= 0).any():
            raise ParameterError("online detector: a layer routes no tokens at a step")
        shares = counts / totals[:, :, None]
        # per sample 1 / (k^2 tokens): the sampling variance of a share q/k is q(1-q) times
        # this, with q taken from the window's mean share at evaluation (a sample's own
        # shares are 0 or 1 with a few tokens per step)
        sampling = self.top_k / (self.top_k ** 2 * totals)
        previous = shares[:, :1] if self._last is None else self._last[:, None]
        hsd = 0.5 * (np.diff(np.concatenate([previous, shares], axis=1), axis=1) ** 2
                     ).mean(axis=2)
        # the last w samples seen before this block, then the block
        keep = min(self.rows, self.w)
        ext_shares = np.concatenate([self._shares[:, self.w - keep:], shares], axis=1)
        ext_sampling = np.concatenate([self._sampling[:, self.w - keep:], sampling], axis=1)
        ext_hsd = np.concatenate([self._hsd[:, self.w - keep:], hsd], axis=1)
        ext_steps = np.concatenate([self._steps[self.w - keep:], steps])
        first_row = self.rows - keep  # absolute row of ext[0]
        rows = np.arange(self.rows + 1, self.rows + n + 1)  # samples seen after each new one
        evals = rows[(rows >= self.w) & ((rows - self.w) % self.stride == 0)]
        labels = np.empty((self.n_layers, n), dtype=bool)
        state = np.array(self._state_before)
        changes: list[tuple[int, np.ndarray]] = []  # (position in block, state after)
        if len(evals):
            ends = evals - first_row  # window = ext[end - w : end]
            window = np.lib.stride_tricks.sliding_window_view(ext_shares, self.w, axis=1)
            picked = window[:, ends - self.w]  # (L, m, E, w)
            var = picked.var(axis=3, ddof=1).mean(axis=2)  # (L, m)
            q = np.minimum(picked.mean(axis=3) * self.top_k, 1.0)  # (L, m, E)
            inv = np.lib.stride_tricks.sliding_window_view(
                ext_sampling, self.w, axis=1)[:, ends - self.w].mean(axis=2)  # (L, m)
            mean_sampling = (q * (1.0 - q)).mean(axis=2) * inv
            # successive pairs inside the window: the first sample's change is left out
            mean_hsd = np.lib.stride_tricks.sliding_window_view(
                ext_hsd, self.w - 1, axis=1)[:, ends - self.w + 1].mean(axis=2)
            for j, end in enumerate(ends):
                self._evaluate(int(ext_steps[end - 1]), int(ext_steps[end - self.w]),
                               var[:, j], mean_sampling[:, j], mean_hsd[:, j])
                now = np.array([layer.stable for layer in self.layers])
                if (now != state).any():
                    changes.append((int(evals[j] - self.rows - 1), now))
                    state = now
        # labels: the state before the block until the first change, and so on
        bounds = [0] + [pos for pos, _ in changes] + [n]
        states = [np.array(self._state_before)] + [s for _, s in changes]
        for a, b, st in zip(bounds[:-1], bounds[1:], states):
            labels[:, a:b] = st[:, None]
        self._state_before = state.tolist()
        # keep the last w samples for the next block
        self._shares = self._fill(ext_shares)
        self._sampling = self._fill(ext_sampling)
        self._hsd = self._fill(ext_hsd)
        self._steps = self._fill(ext_steps[None])[0]
        self._last = shares[:, -1]
        self.rows += n
        return labels

    def _fill(self, ext: np.ndarray) -> np.ndarray:
        """The last w samples along axis 1 (zero-padded in front before w were seen)."""
        tail = ext[:, -self.w:]
        if tail.shape[1] == self.w:
            return tail.copy()
        pad = np.zeros((ext.shape[0], self.w - tail.shape[1]) + ext.shape[2:], dtype=ext.dtype)
        return np.concatenate([pad, tail], axis=1)

    # -- deciding --------------------------------------------------------------------------
    def _evaluate(self, step: int, window_start: int, var: np.ndarray, sampling: np.ndarray,
                  hsd: np.ndarray) -> None:
        """The decisions after the window ``window_start .. step``, for every layer."""
        for i in range(self.n_layers):
            ratio = hsd[i] / max(sampling[i], 1e-300)
            self._remember(i, ratio, var[i] <= self.stable_ratio * hsd[i])
            noise = max(min(hsd[i], self._scale(i) * sampling[i]), 1e-300)
            self._decide(i, step, window_start, var[i] / noise)

    def _remember(self, i: int, ratio: float, white: bool) -> None:
        ratios, flags = self._ratios[i], self._white[i]
        if len(ratios) >= HISTORY:  # decimate: keep every other, the span stays the whole run
            ratios, flags = ratios[::2], flags[::2]
        self._ratios[i] = np.append(ratios, ratio)
        self._white[i] = np.append(flags, white)

    def _scale(self, i: int) -> float:
        ratios, white = self._ratios[i], self._white[i]
        if not white.any():
            return 1.0
        return max(1.0, min(float(np.median(ratios[white])),
                             float(np.quantile(ratios, CAP_QUANTILE))))

    def _decide(self, i: int, step: int, window_start: int, excess: float) -> None:
        layer = self.layers[i]
        quiet, loud = excess <= self.stable_ratio, excess > self.enter_ratio
        agrees = quiet if layer.stable else not quiet
        self._agree[i] = (self._agree[i] + [agrees])[-max(4, 2 * self.confirm_rows
                                                           // self.stride):]
        layer.confidence = float(np.mean(self._agree[i]))
        towards = loud if layer.stable else quiet  # evidence for changing state
        if not towards:
            self._run_start[i], self._run_rows[i] = -1, 0
            return
        if self._run_start[i] < 0:
            self._run_start[i] = window_start
            self._run_rows[i] = 0
        self._run_rows[i] += self.stride
        if self._run_rows[i] * self.interval >= self.confirm:
            layer.stable = not layer.stable
            layer.onset = int(self._run_start[i])
            layer.called_at = step
            layer.history.append((step, layer.onset, layer.stable))
            self._run_start[i], self._run_rows[i] = -1, 0
            self._agree[i] = []


@dataclass(frozen=True)
class OnlineStates:
    """The online labels of a whole trace, as a live job would have seen them."""

    stable: np.ndarray  # (L, T) bool: the state believed at each step
    stable_from: list[int | None]  # per layer: onset of the stable state believed at the end
    detected_at: list[int | None]  # per layer: step at which that stable state was called
    calls: list[list[tuple[int, int, bool]]]  # per layer: (called at, onset, stable?)
    confidence: list[float]


def online_states(loads: Loads, *, window: int = STATE_WINDOW, top_k: int = 1,
                  stable_ratio: float = STABLE_RATIO, enter_ratio: float = ENTER_RATIO,
                  confirm: int = CONFIRM, chunk: int = 4096) -> OnlineStates:
    """Run the detector over ``loads`` (fed ``chunk`` samples at a time)."""
    detector = OnlineDetector(loads.n_layers, loads.n_experts, window=window, top_k=top_k,
                              stable_ratio=stable_ratio, enter_ratio=enter_ratio,
                              confirm=confirm, interval=loads.interval)
    parts = [detector.update(loads.steps[i:i + chunk], loads.counts[:, i:i + chunk])
             for i in range(0, loads.n_steps, chunk)]
    stable = np.concatenate(parts, axis=1) if parts else np.zeros((loads.n_layers, 0), bool)
    layers = detector.layers
    return OnlineStates(stable, [la.stable_from for la in layers],
                        [la.called_at if la.stable else None for la in layers],
                        [list(la.history) for la in layers], [la.confidence for la in layers])
