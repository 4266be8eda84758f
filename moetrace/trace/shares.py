"""Per-layer steps x experts arrays of token counts and load shares, taken once from a trace.

Everything downstream of the reader (states, predictors, backtest) works on :class:`Loads`:
plain numpy arrays indexed [layer, step position, expert].
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np


@dataclass(frozen=True)
class Loads:
    """Token counts of a trace (or a window of it) as dense arrays.

    ``counts[l, t, e]`` is the number of tokens routed to expert ``e`` of the ``l``-th layer in
    ``layers`` at step ``steps[t]``. Steps are increasing; gaps between them are allowed.
    """

    steps: np.ndarray  # (T,) int64
    counts: np.ndarray  # (L, T, E) int64
    layers: tuple[int, ...]

    @property
    def n_layers(self) -> int:
        return self.counts.shape[0]

    @property
    def n_steps(self) -> int:
        return self.counts.shape[1]

    @property
    def n_experts(self) -> int:
        return self.counts.shape[2]

    @cached_property
    def totals(self) -> np.ndarray:
        """Tokens per layer per step, shape (L, T)."""
        return self.counts.sum(axis=2)

    @cached_property
    def shares(self) -> np.ndarray:
        """Load proportion of each expert, shape (L, T, E); sums to 1 over experts."""
        return load_shares(self.counts)

    def window(self, start: int, stop: int) -> "Loads":
        """The step positions ``start:stop`` (not step numbers) as a new Loads sharing memory.

        Shares and totals already computed here are sliced, not recomputed: a backtest takes
        one window per origin and predictor.
        """
        part = Loads(self.steps[start:stop], self.counts[:, start:stop], self.layers)
        for name in ("shares", "totals"):
            if name in self.__dict__:
                part.__dict__[name] = self.__dict__[name][:, start:stop]
        return part

    def upto(self, step: int) -> "Loads":
        """Everything at or before step number ``step``: the history an origin may see."""
        return self.window(0, int(np.searchsorted(self.steps, step, side="right")))


def load_shares(counts: np.ndarray) -> np.ndarray:
    """Shares p[..., t, e] = counts[..., t, e] / sum_e counts[..., t, e] (float64)."""
    counts = np.asarray(counts, dtype=np.float64)
    return counts / counts.sum(axis=-1, keepdims=True)
