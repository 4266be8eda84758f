"""Following a recording while it is written: new complete parts in, merged steps out.

The recorder writes ``DIR/rank=R/part-NNNNNN.parquet``, each part complete when it appears
(written under a hidden name, then renamed). :class:`Follower` lists what is new at each poll
(never a hidden or temporary file, never a file twice) and reads each new part once;
:class:`Merger` keeps each rank's steps until every rank has reported them, then hands them
on summed, in step order, exactly once. Memory holds only steps some rank has not reached yet.

A rank that stops while the others go on is reported and, after ``stall_steps`` steps of the
others' progress, left out (its later parts for steps already handed on are reported and
dropped): the watch never waits for it forever. A file that cannot be read is reported once
and skipped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from moetrace.defaults import STALL_STEPS
from moetrace.errors import MoetraceError, first_line

PART = re.compile(r"^part-(\d+)\.parquet$")
RANK_DIR = re.compile(r"^rank=(\d+)$")


@dataclass
class Part:
    rank: int
    index: int
    path: Path
    steps: np.ndarray  # (n,)
    counts: np.ndarray  # (L, n, E)
    world_size: int | None
    top_k: int | None


class Follower:
    """New complete parts under ``root`` at each :meth:`poll`."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.seen: set[Path] = set()

    def poll(self) -> tuple[list[Part], list[str]]:
        """(new parts in (rank, index) order, problems: one line per file that could not be
        read, each reported once)."""
        found = []
        if self.root.is_dir():
            for rank_dir in self.root.iterdir():
                rank = RANK_DIR.match(rank_dir.name)
                if not rank or not rank_dir.is_dir():
                    continue
                for file in rank_dir.iterdir():
                    match = PART.match(file.name)
                    if match and file not in self.seen:
                        found.append((int(rank.group(1)), int(match.group(1)), file))
        parts, problems = [], []
        for rank, index, file in sorted(found):
            self.seen.add(file)
            try:
                parts.append(read_part(rank, index, file))
            except MoetraceError as exc:
                problems.append(f"skipped {file}: {first_line(exc)}")
        return parts, problems


def read_part(rank: int, index: int, file: Path) -> Part:
    from moetrace.trace import read_trace

    trace = read_trace(file)
    loads = trace.loads()
    extra = trace.metadata.extra or {}
    world = extra.get("world_size")
    return Part(rank, index, file, loads.steps, loads.counts.astype(np.int64),
                int(world) if isinstance(world, int) else None, trace.metadata.top_k)


@dataclass
class Merger:
    """Steps every rank has reported, summed over ranks, in order, each once."""

    stall_steps: int = STALL_STEPS  # steps others may run ahead before a silent rank is left out
    buffers: dict[int, list[tuple[np.ndarray, np.ndarray]]] = field(default_factory=dict)
    last: dict[int, int] = field(default_factory=dict)  # rank -> last step it reported
    expected: set[int] = field(default_factory=set)
    stalled: set[int] = field(default_factory=set)
    emitted: int = -1  # last step handed on

    def add(self, parts: list[Part]) -> tuple[tuple[np.ndarray, np.ndarray] | None, list[str]]:
        """Take new parts; return (merged (steps, counts) now complete, or None; events)."""
        events = []
        for part in parts:
            if part.world_size:
                self.expected |= set(range(part.world_size))
            self.expected.add(part.rank)
            late = part.steps <= self.emitted
            if late.any():
                events.append(f"rank {part.rank}: steps up to {int(part.steps[late][-1])} "
                              "arrived after they were merged without it; dropped")
                if late.all():
                    continue
                part = Part(part.rank, part.index, part.path, part.steps[~late],
                            part.counts[:, ~late], part.world_size, part.top_k)
            self.buffers.setdefault(part.rank, []).append((part.steps, part.counts))
            self.last[part.rank] = max(self.last.get(part.rank, -1), int(part.steps[-1]))
            if part.rank in self.stalled:
                self.stalled.discard(part.rank)
                events.append(f"rank {part.rank} resumed at step {int(part.steps[0])}")
        active = self.expected - self.stalled
        if not self.last:
            return None, events
        ahead = max(self.last.values())
        for rank in sorted(active):
            if ahead - self.last.get(rank, -1) > self.stall_steps:
                self.stalled.add(rank)
                events.append(f"rank {rank} stalled: no parts after step "
                              f"{self.last.get(rank, 'none')} while others reached {ahead}; "
                              "merging without it")
        active = self.expected - self.stalled
        if not active or any(rank not in self.last for rank in active):
            return None, events
        frontier = min(self.last[rank] for rank in active)
        return self._release(active, frontier), events

    def _release(self, ranks: set[int], frontier: int):
        blocks = []
        for rank in ranks:
            keep, out = [], []
            for steps, counts in self.buffers.get(rank, []):
                now = steps <= frontier
                if now.any():
                    out.append((steps[now], counts[:, now]))
                if (~now).any():
                    keep.append((steps[~now], counts[:, ~now]))
            self.buffers[rank] = keep
            if out:
                blocks.append((np.concatenate([s for s, _ in out]),
                               np.concatenate([c for _, c in out], axis=1)))
        for rank in set(self.buffers) - ranks:  # a stalled rank's merged-past steps go
            pruned = []
            for steps, counts in self.buffers[rank]:
                later = steps > frontier
                if later.any():
                    pruned.append((steps[later], counts[:, later]))
            self.buffers[rank] = pruned
        if not blocks:
            return None
        steps = np.unique(np.concatenate([s for s, _ in blocks]))
        steps = steps[steps > self.emitted]
        if len(steps) == 0:
            return None
        n_layers = max(c.shape[0] for _, c in blocks)
        n_experts = max(c.shape[2] for _, c in blocks)
        total = np.zeros((n_layers, len(steps), n_experts), dtype=np.int64)
        for s, c in blocks:
            pos = np.searchsorted(steps, s)
            ok = (pos < len(steps)) & (steps[np.minimum(pos, len(steps) - 1)] == s)
            total[:c.shape[0], pos[ok], :c.shape[2]] += c[:, ok]
        self.emitted = int(steps[-1])
        return steps, total
