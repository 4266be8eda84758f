"""The simulator's ground truth: the transient volatility envelope and the states it implies.

A layer is *transient* exactly where its volatility envelope is above zero, *stable* where it
is zero (only the slow drift and multinomial sampling remain). The initial transient's
envelope falls linearly from the layer's amplitude to exactly zero at its boundary; a
re-entry jumps to a fraction of that amplitude and falls linearly to zero over its duration.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from moetrace.simulate.config import SimConfig
from moetrace.states.segment import STABLE, TRANSIENT, Segment  # noqa: F401  (re-exported)


def volatility(config: SimConfig, start: int, stop: int) -> np.ndarray:
    """Transient volatility envelope (logit units) per layer for steps start..stop-1: (L, T)."""
    t = np.arange(start, stop, dtype=np.float64)
    amplitudes = np.asarray(config.layer_amplitudes())
    out = np.zeros((config.n_layers, len(t)))
    for layer, (boundary, amp) in enumerate(zip(config.transient, amplitudes)):
        if boundary > 0:
            out[layer] = amp * np.clip(1.0 - t / boundary, 0.0, None)
    for begin, duration in config.reentries:
        ramp = np.where((t >= begin) & (t < begin + duration), 1.0 - (t - begin) / duration, 0.0)
        out = np.maximum(out, amplitudes[:, None] * config.reentry_amplitude * ramp[None, :])
    return out


@dataclass(frozen=True)
class Truth:
    """Per layer: the segments covering every step, and the start of the final stable one."""

    segments: tuple[tuple[Segment, ...], ...]

    @property
    def boundaries(self) -> list[int | None]:
        """First step of each layer's final stable segment; None if it ends transient."""
        return [segs[-1].start if segs[-1].state == STABLE else None for segs in self.segments]

    def stable_mask(self, n_steps: int) -> np.ndarray:
        """(L, n_steps) bool: True where the step is in a stable segment."""
        mask = np.zeros((len(self.segments), n_steps), dtype=bool)
        for layer, segs in enumerate(self.segments):
            for seg in segs:
                if seg.state == STABLE:
                    mask[layer, seg.start:seg.end] = True
        return mask

    def to_extra(self) -> dict[str, Any]:
        """The ``true_boundaries`` and ``true_segments`` entries of the trace metadata."""
        return {
            "true_boundaries": self.boundaries,
            "true_segments": [[{"start": s.start, "end": s.end, "state": s.state} for s in segs]
                              for segs in self.segments],
        }

    @classmethod
    def from_extra(cls, extra: dict[str, Any]) -> "Truth":
        """Read the truth back from a simulated trace's ``metadata.extra``."""
        return cls(tuple(tuple(Segment(int(s["start"]), int(s["end"]), str(s["state"]))
                               for s in segs) for segs in extra["true_segments"]))


def ground_truth(config: SimConfig) -> Truth:
    """Segments per layer: transient where the envelope is above zero, stable elsewhere."""
    layers = []
    for boundary in config.transient:
        spans = [(0, boundary)] if boundary > 0 else []
        spans += [(b, b + d) for b, d in config.reentries]
        layers.append(_segments(spans, config.steps))
    return Truth(tuple(layers))


def _segments(transient_spans: list[tuple[int, int]], steps: int) -> tuple[Segment, ...]:
    """Merge transient spans (clipped to the trace) and fill the gaps with stable segments."""
    merged: list[list[int]] = []
    for begin, end in sorted((b, min(e, steps)) for b, e in transient_spans if b < steps):
        if merged and begin <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([begin, end])
    out, cursor = [], 0
    for begin, end in merged:
        if begin > cursor:
            out.append(Segment(cursor, begin, STABLE))
        out.append(Segment(begin, end, TRANSIENT))
        cursor = end
    if cursor < steps:
        out.append(Segment(cursor, steps, STABLE))
    return tuple(out)
