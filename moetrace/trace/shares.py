"""Per-layer steps x experts arrays of token counts and load shares, and the one time axis.

Everything downstream of the reader (states, predictors, backtest) works on :class:`Loads`:
plain numpy arrays indexed [layer, row, expert], with the training step of every row.

**One time axis.** Traces are often sampled (every k-th training step) or gapped. Every
window, history, bucket, stride and horizon in moetrace is given in *training steps*; this
module is the one place that turns steps into rows: :attr:`Loads.interval` (the sampling
interval), :meth:`Loads.samples` (rows that a window of steps holds),
:meth:`Loads.horizon_samples` (rows that a horizon after a recorded step holds),
:meth:`Loads.index` / :meth:`Loads.rows` (positions of step numbers), :meth:`Loads.between`
(the rows of a span of steps), :meth:`Loads.last` (the rows of the trailing steps) and
:meth:`Loads.upto` (the history an origin may see).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from moetrace.errors import ParameterError


def sampling_interval(steps: np.ndarray) -> int:
    """Training steps between recorded steps: the most common gap (1 for a trace of every
    step; the smallest of equally common ones). The most common, so a few missing samples
    of a trace of every 10th step still give 10, and a few gaps in a trace of every step 1.
    """
    steps = np.asarray(steps)
    if len(steps) < 2:
        return 1
    gaps, counts = np.unique(np.diff(steps), return_counts=True)
    return max(1, int(gaps[np.argmax(counts)]))


@dataclass(frozen=True)
class Loads:
    """Token counts of a trace (or a window of it) as dense arrays.

    ``counts[l, t, e]`` is the number of tokens routed to expert ``e`` of the ``l``-th layer in
    ``layers`` at step ``steps[t]``. Steps are increasing; gaps between them are allowed.
    """

    steps: np.ndarray  # (T,) int64
    counts: np.ndarray  # (L, T, E) int64
    layers: tuple[int, ...]

    @classmethod
    def axis(cls, steps: np.ndarray) -> "Loads":
        """The time axis alone (no layers): span, interval and samples of ``steps``."""
        steps = np.asarray(steps, dtype=np.int64)
        return cls(steps, np.zeros((0, len(steps), 0), dtype=np.int32), ())

    @property
    def n_layers(self) -> int:
        return self.counts.shape[0]

    @property
    def n_steps(self) -> int:
        """Rows (recorded steps); see :attr:`span` for the training steps they cover."""
        return self.counts.shape[1]

    @property
    def n_experts(self) -> int:
        return self.counts.shape[2]

    @cached_property
    def interval(self) -> int:
        """The sampling interval in training steps (see :func:`sampling_interval`)."""
        return sampling_interval(self.steps)

    @property
    def span(self) -> int:
        """Training steps the rows cover: each row stands for ``interval`` steps."""
        if self.n_steps == 0:
            return 0
        return int(self.steps[-1] - self.steps[0]) + self.interval

    def samples(self, steps: int) -> int:
        """Rows that a window of ``steps`` training steps holds at this trace's sampling
        interval, to the nearest row (>= 1): windows and radii given in steps."""
        return max(1, int(round(steps / self.interval)))

    def horizon_samples(self, steps: int) -> int:
        """Rows that the ``steps`` training steps after a recorded step hold: the recorded
        steps in (t, t + steps] of a regularly sampled trace, ``steps // interval`` (>= 1).
        A 1,000-step horizon on a trace of every 600th step scores one sample, not two."""
        return max(1, int(steps) // self.interval)

    def index(self, step: int) -> int:
        """Rows at or before training step ``step``: the position just after it."""
        return int(np.searchsorted(self.steps, step, side="right"))

    def snap(self, targets) -> np.ndarray:
        """The recorded step at or before each of the ``targets`` steps (each at or after
        the first recorded step)."""
        return self.steps[np.searchsorted(self.steps, np.asarray(targets), side="right") - 1]

    def positions(self, steps) -> np.ndarray:
        """The row of each of ``steps`` (recorded steps)."""
        return np.searchsorted(self.steps, np.asarray(steps), side="left")

    def rows(self, after: int, upto: int) -> slice:
        """Positions of the rows whose steps lie in (after, upto]: the horizon after an
        origin (``rows(t, t + h)``) or the window before a step (``rows(t - w, t)``)."""
        return slice(self.index(after), self.index(upto))

    def between(self, after: int, upto: int) -> "Loads":
        """The rows whose steps lie in (after, upto], sharing memory (see :meth:`rows`)."""
        span = self.rows(after, upto)
        return self.window(span.start, span.stop)

    @cached_property
    def totals(self) -> np.ndarray:
        """Tokens per layer per step, shape (L, T)."""
        return self.counts.sum(axis=2)

    @cached_property
    def shares(self) -> np.ndarray:
        """Load proportion of each expert, shape (L, T, E); sums to 1 over experts."""
        return load_shares(self.counts)

    def window(self, start: int, stop: int) -> "Loads":
        """The rows ``start:stop`` (positions, not step numbers) as a new Loads sharing memory.

        Shares and totals already computed here are sliced, not recomputed: a backtest takes
        one window per origin and predictor. The sampling interval is carried over, so a
        short window of a sampled trace keeps the trace's interval.
        """
        part = Loads(self.steps[start:stop], self.counts[:, start:stop], self.layers)
        for name in ("shares", "totals"):
            if name in self.__dict__:
                part.__dict__[name] = self.__dict__[name][:, start:stop]
        part.__dict__["interval"] = self.interval
        return part

    def select(self, positions: list[int]) -> "Loads":
        """The layers at ``positions`` (not layer numbers), all steps."""
        part = Loads(self.steps, self.counts[positions], tuple(self.layers[i] for i in positions))
        part.__dict__["interval"] = self.interval
        return part

    def upto(self, step: int) -> "Loads":
        """Everything at or before step number ``step``: the history an origin may see."""
        return self.window(0, self.index(step))

    def last(self, steps: int) -> "Loads":
        """The rows of the last ``steps`` training steps (steps after ``last step - steps``)."""
        if self.n_steps == 0:
            return self
        return self.window(self.index(int(self.steps[-1]) - steps), self.n_steps)

    def require(self, steps: int, who: str) -> None:
        """Raise ParameterError unless the rows cover at least ``steps`` training steps; the
        message says both the steps and the samples they hold."""
        if self.span < steps:
            have = f"{self.span:,} steps ({self.n_steps:,} samples)" if self.n_steps else \
                "no steps"
            raise ParameterError(
                f"{who}: needs {steps:,} steps = {self.samples(steps):,} samples of history at "
                f"this trace's sampling interval of {self.interval:,} step(s), got {have}"
                + (f" up to step {int(self.steps[-1]):,}" if self.n_steps else ""))


def load_shares(counts: np.ndarray) -> np.ndarray:
    """Shares p[..., t, e] = counts[..., t, e] / sum_e counts[..., t, e] (float64), made
    without a float64 copy of the counts first (one float64 array of their shape at peak)."""
    counts = np.asarray(counts)
    if not np.issubdtype(counts.dtype, np.integer):
        counts = counts.astype(np.float64, copy=False)
    return np.true_divide(counts, counts.sum(axis=-1, keepdims=True), dtype=np.float64)
