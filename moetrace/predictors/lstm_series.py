"""What the lstm learns from and forecasts, in numpy: every (layer, expert) share series on its
own scale, and the mean share over blocks of leads.

The LSTM is one small model shared by every series of a trace (moetrace/predictors/lstm.py).
For it to serve a hot expert of 5% and a cold one of 0.1%, a calm layer and a swinging one
alike, each series is shown as its departure from its own recent *level* (the mean of its last
``BASELINE`` buckets) in units of its own recent *noise* (the RMS of its one-bucket-ahead errors
against that level over the last ``NOISE`` buckets), with its level, where its level stands
against its longer mean (``LONG`` buckets), how its level moved over the last ``BASELINE``
buckets, how much its noise exceeds what multinomial sampling of the bucket's tokens gives
(about 1 where a series is as quiet as sampling allows: the stable state), and over its layer
the mean of that excess and the RMS of the level's departures (how turbulent the layer is
now). Every array here is indexed (series, bucket, ...), a series being ``layer * E + expert``;
every statistic at bucket t uses buckets up to t only.

Forecasts are made for *lead blocks*: block j holds the leads 2**j .. 2**(j+1) - 1 buckets
ahead (1, 2-3, 4-7, ..., 128-255), the last block every lead from 2**(BLOCKS - 1) on, so one
output per block covers a horizon of any length with more resolution where the forecast
changes fastest.
"""

from __future__ import annotations

import numpy as np

#: Buckets averaged into a series' level (100 steps at the default 20-step bucket): the
#: forecast of the untrained model. On the simulated samples a 100-step mean was as good as any
#: window from 20 to 200 steps, and better than the last bucket alone.
BASELINE = 5
#: Buckets of the longer mean the level is compared with (1,000 steps at the default bucket,
#: sw_avg's window): where a level above it tends to return, the model can learn it.
LONG = 50
#: Buckets over which a series' noise is measured (400 steps at the default bucket).
NOISE = 20
#: Lead blocks: 1, 2-3, 4-7, ..., and from 128 buckets on (2,560 steps at the default bucket).
BLOCKS = 8
#: Noise-scaled departures beyond this are clipped (robust to a collapse or a restart).
CLIP = 10.0
#: Fewest share units a noise level can be (a constant series would divide by zero).
FLOOR = 1e-6
#: Features per (series, bucket), in the order :func:`features` returns them.
N_FEATURES = 7
#: Buckets before a bucket that its features read: features computed on the last
#: LOOKBACK + m buckets of a series equal, on its last m, those computed on all of it.
LOOKBACK = max(LONG, NOISE + BASELINE, 2 * BASELINE) - 1


def as_series(buckets: np.ndarray) -> np.ndarray:
    """(L, n, E) bucket shares -> (L*E, n): one row per (layer, expert) series."""
    n_layers, n, n_experts = buckets.shape
    return np.ascontiguousarray(buckets.transpose(0, 2, 1).reshape(n_layers * n_experts, n))


def trailing_mean(x: np.ndarray, m: int) -> np.ndarray:
    """(S, n) -> (S, n): at each bucket the mean of it and the m - 1 before it (fewer at the
    start)."""
    c = np.cumsum(np.concatenate([np.zeros((x.shape[0], 1)), x], axis=1), axis=1)
    t = np.arange(1, x.shape[1] + 1)
    lo = np.maximum(t - m, 0)
    return (c[:, t] - c[:, lo]) / (t - lo)


def levels(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(S, n) shares -> each series' level (mean of its last BASELINE buckets) and noise (RMS
    of its errors x[t] - level[t - 1] over the last NOISE buckets, at least FLOOR), (S, n) each."""
    level = trailing_mean(x, BASELINE)
    error = np.zeros_like(x)
    error[:, 1:] = x[:, 1:] - level[:, :-1]
    noise = np.sqrt(trailing_mean(error ** 2, NOISE))
    return level, np.maximum(noise, FLOOR)


def tokens_per_bucket(loads, bucket: int) -> np.ndarray:
    """(L,) tokens a bucket of ``bucket`` training steps holds per layer (the median tokens
    per recorded step times the recorded steps per bucket): what sampling noise scales with."""
    per_step = np.median(loads.totals, axis=1) if loads.n_steps else np.ones(loads.n_layers)
    return np.maximum(per_step * max(1, bucket // loads.interval), 1.0)


def features(x: np.ndarray, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(S, n) shares of ``len(tokens)`` layers, with the tokens per bucket of each layer ->
    (S, n, N_FEATURES) features, level and noise.

    Per series and bucket: the departure from the level and the level's departure from the
    longer mean, both in noise units and clipped; the level's change over the last BASELINE
    buckets in noise units; log(level x E) (0 for a uniform share); the log of the noise over
    what multinomial sampling alone would give (about 0 where a series is as quiet as noise,
    larger while it moves, whatever its size); and, over the series' layer, the mean of that
    excess and the RMS of the level's departures from the longer mean (how much the whole
    layer moves now)."""
    n_series, n = x.shape
    n_layers = len(tokens)
    n_experts = n_series // n_layers
    level, noise = levels(x)
    longer = trailing_mean(x, LONG)
    departure = np.clip((x - level) / noise, -CLIP, CLIP)
    standing = np.clip((level - longer) / noise, -CLIP, CLIP)
    moved = np.zeros_like(x)
    moved[:, BASELINE:] = level[:, BASELINE:] - level[:, :-BASELINE]
    moved = np.clip(moved / noise, -CLIP, CLIP)
    tiny = 1.0 / (n_experts * 1e6)
    size = np.clip(np.log(np.maximum(level, tiny) * n_experts), -CLIP, CLIP)
    # the one-bucket-ahead error of a 5-bucket mean under sampling alone: var p(1-p)/N x 6/5
    sampling = np.sqrt(np.clip(level * (1 - level), tiny, None) * (1 + 1 / BASELINE)
                       / np.repeat(tokens, n_experts)[:, None])
    excess = np.clip(np.log(noise / sampling), -CLIP, CLIP)

    def over_layer(v: np.ndarray, how) -> np.ndarray:
        return np.repeat(how(v.reshape(n_layers, n_experts, n)), n_experts, axis=0)

    out = np.stack([departure, standing, moved, size, excess,
                    over_layer(excess, lambda v: v.mean(axis=1)),
                    over_layer(standing, lambda v: np.sqrt((v ** 2).mean(axis=1)))], axis=-1)
    return out, level, noise


def block_of(leads: np.ndarray) -> np.ndarray:
    """Lead (buckets ahead, >= 1) -> its block: floor(log2 lead), at most BLOCKS - 1."""
    leads = np.asarray(leads, dtype=np.int64)
    return np.minimum(np.floor(np.log2(leads)).astype(np.int64), BLOCKS - 1)


def block_weights(horizon: int) -> np.ndarray:
    """(BLOCKS,) how many of the leads 1 .. ``horizon`` buckets fall in each block, as
    fractions: how much each block's forecast counts in an error over that horizon."""
    counts = np.bincount(block_of(np.arange(1, max(horizon, 1) + 1)), minlength=BLOCKS)
    return counts / counts.sum()


def block_targets(x: np.ndarray, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """What each bucket t < ``stop`` forecasts: (S, stop, BLOCKS) the mean share over each lead
    block (the last block over leads 2**(BLOCKS-1) .. 2**BLOCKS - 1), and (stop, BLOCKS)
    whether the block ends before ``stop`` (only buckets before it are targets)."""
    c = np.cumsum(np.concatenate([np.zeros((x.shape[0], 1)), x[:, :stop]], axis=1), axis=1)
    t = np.arange(stop)
    targets = np.zeros((x.shape[0], stop, BLOCKS))
    known = np.zeros((stop, BLOCKS), dtype=bool)
    for j in range(BLOCKS):  # BLOCKS blocks, each vectorised over series and buckets
        lo, hi = t + 2 ** j, t + 2 ** (j + 1)  # leads 2**j .. 2**(j+1) - 1: buckets [lo, hi)
        known[:, j] = hi <= stop
        lo_c, hi_c = np.minimum(lo, stop), np.minimum(hi, stop)
        targets[:, :, j] = (c[:, hi_c] - c[:, lo_c]) / 2 ** j
    return targets, known
