"""Chunks of layers sized so that one chunk's dense arrays fit a memory budget.

Every statistic, segmentation, predictor (the LSTM aside, see docs/scaling.md) and placement
plan is per layer, so a trace can be worked on a few layers at a time: peak memory then
depends on one chunk (times the workers running at once), not on the trace.
"""

from __future__ import annotations

import os

from moetrace.errors import ParameterError

#: working memory one chunk may take, per worker (``MOETRACE_CHUNK_MEMORY`` overrides: bytes,
#: or with a k, M or G suffix)
DEFAULT_BUDGET = 1 << 30
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
#: bytes each (layer, step, expert) cell costs at peak, per kind of work, over a worker's own
#: ~0.3 GB (measured on one 100,000-step DeepSeek-V3 layer, docs/scaling.md: the analysis
#: holds int32 counts and one step range of floats; a backtest of the report's five
#: predictors 36; a replay, its shares cached, 16)
BYTES_PER_CELL = {"analyze": 8, "backtest": 48, "replay": 24, "forecast": 64}
#: bytes of the budget one row of a validation range stands for: a range of 1 GiB / 32 = 32M
#: rows is a few seconds of work, so the ranges of a large trace keep every worker busy while a
#: trace of a few million rows stays one range, validated in the command's own process
BYTES_PER_VALIDATED_ROW = 32


def budget() -> int:
    value = os.environ.get("MOETRACE_CHUNK_MEMORY")
    if value is None:
        return DEFAULT_BUDGET
    text = value.strip().lower().removesuffix("b").removesuffix("i")
    unit = text[-1:] if text[-1:] in _UNITS else ""
    try:
        size = int(float(text[:len(text) - len(unit)]) * _UNITS[unit])
    except ValueError:
        size = 0
    if size < 1:
        raise ParameterError(f"MOETRACE_CHUNK_MEMORY must be a positive size (bytes, or 512M, "
                             f"2G), got '{value}'")
    return size


def layer_chunks(n_layers: int, n_steps: int, n_experts: int, work: str,
                 memory: int | None = None) -> list[list[int]]:
    """Consecutive layer positions, as many per chunk as fit ``memory`` (default: the
    budget) for this kind of ``work``; at least one layer per chunk."""
    per_layer = max(1, n_steps * n_experts * BYTES_PER_CELL[work])
    size = max(1, min(n_layers, (memory or budget()) // per_layer))
    return [list(range(i, min(n_layers, i + size))) for i in range(0, n_layers, size)]


def validation_rows(memory: int | None = None) -> int:
    """Rows per range of the validation pass (moetrace.trace.validate) for the budget."""
    return max(1, (memory or budget()) // BYTES_PER_VALIDATED_ROW)
