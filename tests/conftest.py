"""Shared fixtures: tiny traces with known contents, and running the installed CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

os.environ.setdefault("MPLBACKEND", "Agg")

MOETRACE = Path(sys.executable).with_name("moetrace")


def long_frame(counts: np.ndarray, steps: np.ndarray | None = None) -> pl.DataFrame:
    """Long rows (step, layer, expert, tokens) from a counts[layer, step, expert] array."""
    n_layers, n_steps, n_experts = counts.shape
    steps = np.arange(n_steps) if steps is None else np.asarray(steps)
    layer, t, expert = np.meshgrid(np.arange(n_layers), np.arange(n_steps), np.arange(n_experts),
                                   indexing="ij")
    return pl.DataFrame({"step": steps[t.ravel()], "layer": layer.ravel(),
                         "expert": expert.ravel(), "tokens": counts.ravel()})


#: Hidden files moetrace keeps on purpose: the output marker and a recorder's rank lock.
KEPT_HIDDEN = {".moetrace-output", ".lock"}


def names(directory: Path) -> list[str]:
    """What a user sees in a directory (sorted, hidden files left out)."""
    return sorted(p.name for p in Path(directory).iterdir() if not p.name.startswith("."))


def leftovers(directory: Path) -> list[str]:
    """Hidden files other than the ones moetrace keeps on purpose: temporaries left behind."""
    return sorted(p.name for p in Path(directory).iterdir()
                  if p.name.startswith(".") and p.name not in KEPT_HIDDEN)


def run_cli(*args: str, check: bool = False) -> subprocess.CompletedProcess:
    """Run the installed `moetrace` entry point as a user would."""
    return subprocess.run([str(MOETRACE), *args], capture_output=True, text=True, check=check,
                          env={**os.environ, "COLUMNS": "120"})


@pytest.fixture
def small_counts() -> np.ndarray:
    """3 layers x 5 steps x 4 experts of known token counts (every layer routes 100 per step)."""
    rng = np.random.default_rng(7)
    shares = rng.dirichlet(np.ones(4), size=(3, 5))
    counts = np.floor(shares * 100).astype(np.int64)
    counts[..., 0] += 100 - counts.sum(axis=-1)
    return counts
