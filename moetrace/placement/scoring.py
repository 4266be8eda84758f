"""What a plan costs under given loads: the one cost model of the planner, the replay and watch.

A plan for L layers is ``replicas [L, E, G]``: how many replicas of expert e GPU g holds. An
expert's tokens are split evenly over its replicas, so GPU g processes the share
``replicas[l, e, g] / replicas[l, e].sum()`` of expert e's tokens; a step waits for the GPU
with the most tokens. **Balancedness** is mean / max of the per-GPU tokens (vLLM's
definition; 1 = perfect).

Every figure here is computed in float32 the same way the replay computes it
(moetrace.placement.replay), so a plan chosen for scoring higher on some steps here scores
higher on those steps in the replay too (up to nothing: the same arithmetic).
"""

from __future__ import annotations

import numpy as np


def replica_counts(phy2log: np.ndarray, n_experts: int, gpus: int) -> np.ndarray:
    """``[L, E, G]`` replicas of each expert on each GPU, from ``phy2log [L, R]``."""
    layers, slots = phy2log.shape
    gpu = np.arange(slots) // (slots // gpus)
    counts = np.zeros((layers, n_experts, gpus), dtype=np.int64)
    np.add.at(counts, (np.arange(layers)[:, None], phy2log, gpu[None, :]), 1)
    return counts


def token_split(replicas: np.ndarray) -> np.ndarray:
    """``[..., E, G]`` float32: the share of each expert's tokens that each GPU processes."""
    total = replicas.sum(axis=-1, keepdims=True)
    return (replicas / np.maximum(total, 1)).astype(np.float32)


def balancedness(gpu_tokens: np.ndarray) -> np.ndarray:
    """Mean over max of the per-GPU token counts (vLLM's balancedness), over the last axis;
    1 where no GPU has tokens."""
    peak = gpu_tokens.max(axis=-1)
    mean = gpu_tokens.mean(axis=-1)
    return np.where(peak > 0, mean / np.where(peak > 0, peak, 1), 1.0)


def gpu_tokens(loads: np.ndarray, replicas: np.ndarray) -> np.ndarray:
    """``[L, S, G]`` float32: each GPU's tokens at each of the steps ``loads [L, S, E]``
    (counts or shares) under the plan ``replicas [L, E, G]``."""
    return np.matmul(np.asarray(loads, dtype=np.float32), token_split(replicas))


def step_balancedness(loads: np.ndarray, replicas: np.ndarray) -> np.ndarray:
    """``[L, S]``: the balancedness of plan ``replicas [L, E, G]`` at each step of
    ``loads [L, S, E]``."""
    return balancedness(gpu_tokens(loads, replicas))


def mean_balancedness(loads: np.ndarray, replicas: np.ndarray) -> np.ndarray:
    """``[L]``: the mean over the steps of ``loads [L, S, E]`` of the balancedness of plan
    ``replicas [L, E, G]`` (what the replay reports, on those steps)."""
    return step_balancedness(loads, replicas).mean(axis=1, dtype=np.float64)


def expected_balancedness(shares: np.ndarray, replicas: np.ndarray) -> np.ndarray:
    """``[L]``: the balancedness plan ``replicas [L, E, G]`` would reach if the loads were
    ``shares [L, E]`` (one step of the mean loads)."""
    return step_balancedness(np.asarray(shares)[:, None, :], replicas)[:, 0]


def moved_replicas(old: np.ndarray, new: np.ndarray) -> np.ndarray:
    """``[L]``: replicas the new plan puts on a GPU that held fewer copies of that expert."""
    return np.maximum(new - old, 0).sum(axis=(1, 2))


def spread_rows(n_rows: int, most: int) -> np.ndarray:
    """Positions of at most ``most`` rows spread evenly over ``n_rows`` (all when fewer)."""
    if n_rows <= most:
        return np.arange(n_rows)
    return np.unique(np.linspace(0, n_rows - 1, most).round().astype(np.int64))


def block_means(values: np.ndarray, blocks: int) -> np.ndarray:
    """``[..., B]``: the means of ``values [..., S]`` over ``B = min(blocks, S)`` consecutive
    blocks of (nearly) equal length, in order."""
    steps = values.shape[-1]
    count = min(blocks, steps)
    starts = (np.arange(count) * steps) // count
    sizes = np.diff(np.append(starts, steps))
    return np.add.reduceat(values.astype(np.float64), starts, axis=-1) / sizes
