"""lstm: one multivariate PyTorch LSTM over the shares of all experts of all layers.

As in the paper, the input at each (bucket) step is the vector of every expert's share in every
MoE layer and the output is the next step's shares of all experts, a softmax per layer; longer
horizons are reached by feeding forecasts back in. The model is residual around a baseline,
the mean of the last ``BASELINE`` buckets: output logits are log(baseline) plus the LSTM's
correction (in units of each series' noise level, zero before training), and the inputs are
each share's departure from the baseline in those units plus its level. So the untrained model
forecasts a recursive sliding average over the baseline window (a constant trace stays constant,
to float32 precision), and early stopping keeps trained weights only where they beat it on the
validation slice. Each (window, layer) counts equally in the training loss, relative to the
baseline's error there, so a few windows of fast transient moves do not decide what is learnt.
Training uses only recent history before the origin (its last 15% of
buckets is the validation slice for early stopping) or a separate training trace; it is seeded
and deterministic on CPU. In a backtest the same object retrains only once the history has
doubled or grown by ``retrain_every`` steps (default 10,000); in between it keeps the weights
from the earlier, shorter history and only conditions on the new one.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager

import numpy as np

from moetrace.defaults import HORIZON
from moetrace.errors import MissingExtraError, ParameterError
from moetrace.predictors.buckets import bucket_means
from moetrace.predictors.template import BucketPredictor, HistoryMark
from moetrace.trace.shares import Loads

try:
    import torch
    from torch import nn
except ImportError:  # pragma: no cover - exercised only without the extra
    raise MissingExtraError("torch", "lstm", "the lstm predictor") from None

DEFAULT_BUCKET = 20
RETRAIN_EVERY = 10_000
HIDDEN = 64
WINDOW = 64  # buckets per training sequence
MAX_EPOCHS = 150
PATIENCE = 10
#: Epochs always trained before early stopping may end training: the first Adam steps of the
#: correction often make the free-running forecast worse before it gets better (a periodic toy
#: trace beats the baseline only after about 20 epochs).
MIN_EPOCHS = 30
MIN_IMPROVEMENT = 1e-3  # relative decrease of the validation loss that counts as progress
LEARNING_RATE = 1e-3
VALIDATION = 0.15
CONTEXT = 512  # buckets of history the model reads before forecasting
#: Buckets averaged into the baseline (100 steps at the default bucket): the untrained model
#: forecasts with a sliding-window average over them, which on the simulated samples was as
#: good as any window from 20 to 200 steps and better than the last bucket alone.
BASELINE = 5
CLIP = 10.0  # noise-scaled departures beyond this are clipped (robust to outliers)
#: Buckets of (recent) history trained on: 10,000 steps at the default bucket, so a long
#: transient start does not dominate what the model learns about the current state.
TRAIN_BUCKETS = 500
#: Fewest buckets to train on besides the validation rollout: with less (a short or sampled
#: history), the model is not trained and forecasts with its baseline, saying so
MIN_TRAIN = 2 * WINDOW
#: the horizon validated on when none is given (training steps): predict's default
DEFAULT_HORIZON = HORIZON
EPS = 1e-9


def moving_baseline(series: np.ndarray, m: int = BASELINE) -> np.ndarray:
    """(n, F) bucket shares -> (n, F): at each bucket the mean of it and the m - 1 before it
    (fewer at the start): the forecast the untrained model makes for the next bucket."""
    c = np.cumsum(np.vstack([np.zeros((1, series.shape[1])), series]), axis=0)
    lo = np.maximum(np.arange(1, len(series) + 1) - m, 0)
    return (c[1:] - c[lo]) / (np.arange(1, len(series) + 1) - lo)[:, None]


class ShareLSTM(nn.Module):
    """(B, T, L*E) shares and their baselines -> (B, T, L, E) next-bucket shares, softmax per
    layer of log(baseline) + the LSTM's correction (zero before training).

    The inputs are each share's departure from its baseline in units of that series' noise
    (``scale``, the spread of those departures on the training data, so a cold expert's
    moves count as much as a hot one's) and its level relative to a uniform share. The
    correction is in the same units (a head output of 1 moves a share by about one noise
    level), so the first optimiser steps make corrections of the size of the noise, not of
    the share.
    """

    def __init__(self, n_layers: int, n_experts: int, scale: np.ndarray, level: np.ndarray,
                 hidden: int = HIDDEN):
        super().__init__()
        self.n_layers, self.n_experts = n_layers, n_experts
        features = n_layers * n_experts
        self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float32))
        # d log(share) = d share / share: a noise level in log-share units
        self.register_buffer("unit", torch.as_tensor(scale / np.maximum(level, 1e-6),
                                                     dtype=torch.float32))
        self.lstm = nn.LSTM(2 * features, hidden, batch_first=True)
        self.head = nn.Linear(hidden, features)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, shares, baseline, state=None):
        b, t, _ = shares.shape
        departure = ((shares - baseline) / self.scale).clamp(-CLIP, CLIP)
        out, state = self.lstm(torch.cat([departure, shares * self.n_experts - 1.0], -1), state)
        logits = torch.log(baseline + EPS) + self.head(out) * self.unit
        return torch.softmax(logits.view(b, t, self.n_layers, self.n_experts), dim=-1), state


@contextmanager
def _deterministic(seed: int):
    """Seeded, deterministic CPU torch for the block; global torch settings restored after.

    One thread: the model is small, and on a shared 2-core machine two OpenMP threads made a
    350M-sized training step 7x slower (1.7 s instead of 0.22 s) by contending for the cores.
    """
    previous = torch.are_deterministic_algorithms_enabled()
    threads = torch.get_num_threads()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            yield
    finally:
        torch.use_deterministic_algorithms(previous)
        torch.set_num_threads(threads)


def _windows(stop: int) -> list[int]:
    """Starts of overlapping training windows of WINDOW inputs whose targets end before stop."""
    length = min(WINDOW, stop - 1)
    starts = list(range(0, stop - length, max(1, length // 2)))
    if starts[-1] != stop - 1 - length:
        starts.append(stop - 1 - length)
    return starts


def noise_scale(series: np.ndarray) -> np.ndarray:
    """(n, F) -> (F,): the RMS departure of each series from its moving baseline (its noise
    level), floored so that a flat series does not divide by zero."""
    rms = np.sqrt(((series - moving_baseline(series)) ** 2).mean(axis=0))
    return np.maximum(rms, 1e-6)


def validation_buckets(n: int, horizon: int) -> int:
    """Buckets of the validation rollout: 15% of the series, and never shorter than the
    horizon the forecast is for (a model that wins over 7 buckets can run off over 100)."""
    return max(int(round(n * VALIDATION)), horizon, 1)


def train_model(series: np.ndarray, n_layers: int, n_experts: int,
                progress=None, horizon: int = 1) -> ShareLSTM:
    """Fit on the last TRAIN_BUCKETS of (n, L*E) bucket shares; early stopping on the error of
    a forecast rolled out over their last ``validation_buckets`` (at least the ``horizon``
    in buckets; epoch 0, the untrained model, is the baseline forecast)."""
    series = series[-max(TRAIN_BUCKETS, MIN_TRAIN + horizon):]
    n = len(series)
    split = min(n - 1, max(2, n - validation_buckets(n, horizon)))
    data = torch.as_tensor(series, dtype=torch.float32)
    base = torch.as_tensor(moving_baseline(series), dtype=torch.float32)
    model = ShareLSTM(n_layers, n_experts, noise_scale(series[:split]),
                      series[:split].mean(axis=0))
    starts = _windows(split)
    length = min(WINDOW, split - 1)
    x = torch.stack([data[s:s + length] for s in starts])
    xb = torch.stack([base[s:s + length] for s in starts])
    y = torch.stack([data[s + 1:s + length + 1] for s in starts])
    y = y.view(*y.shape[:2], n_layers, n_experts)
    # each (window, layer) weighs the same, relative to the baseline's error there: a few
    # windows of fast transient moves (errors thousands of times the stable state's) would
    # otherwise decide what the model learns
    base_error = (xb.view_as(y) - y).pow(2).sum(dim=(1, 3)).clamp_min(1e-30)
    target_val = data[split:].view(-1, n_layers, n_experts)
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)

    def validation_loss() -> float:
        """Error of a forecast from the split over the whole validation slice, as in use."""
        model.eval()
        pred = torch.as_tensor(rollout(model, series[:split], n - split), dtype=torch.float32)
        return ((pred - target_val) * n_experts).pow(2).mean().item()

    # epoch 0 is the untrained model (the baseline forecast): training must beat it to count
    best, best_state, waited = validation_loss(), copy.deepcopy(model.state_dict()), 0
    model.validation_losses = [best]  # per epoch, epoch 0 first: what training achieved
    for epoch in range(MAX_EPOCHS):
        model.train()
        optimizer.zero_grad()
        pred, _ = model(x, xb)
        ((pred - y).pow(2).sum(dim=(1, 3)) / base_error).mean().backward()
        optimizer.step()
        val = validation_loss()
        model.validation_losses.append(val)
        if val < best * (1 - MIN_IMPROVEMENT):
            best, best_state, waited = val, copy.deepcopy(model.state_dict()), 0
        else:
            waited += 1
        if progress:
            progress(epoch + 1, MAX_EPOCHS)
        if waited >= PATIENCE and epoch + 1 >= MIN_EPOCHS:
            break
    model.load_state_dict(best_state)
    model.eval()
    return model


def rollout(model: ShareLSTM, context: np.ndarray, k: int) -> np.ndarray:
    """Read (n, L*E) context buckets, then forecast k buckets by feeding forecasts back (the
    baseline slides over them too, so an untrained model is a recursive sliding average)."""
    out = np.empty((k, model.n_layers, model.n_experts))
    recent = list(context[-BASELINE:])
    with torch.no_grad():
        pred, state = model(torch.as_tensor(context[None], dtype=torch.float32),
                            torch.as_tensor(moving_baseline(context)[None], dtype=torch.float32))
        step = pred[:, -1:]
        for j in range(k):
            out[j] = step[0, 0].double().numpy()
            if j + 1 < k:
                recent = (recent + [out[j].reshape(-1)])[-BASELINE:]
                base = torch.as_tensor(np.mean(recent, axis=0)[None, None], dtype=torch.float32)
                step, state = model(step.reshape(1, 1, -1), base, state)
    return out


class LSTMPredictor(BucketPredictor):
    """One multivariate LSTM (all experts of all layers), trained on history or --train-trace."""

    name = "lstm"
    default_bucket = DEFAULT_BUCKET
    min_buckets = 16

    def __init__(self, options=None, *, retrain_every: int = RETRAIN_EVERY, **inputs):
        super().__init__(options, **inputs)
        self.retrain_every = retrain_every
        self.model: ShareLSTM | None = None
        self._trained_on: HistoryMark | None = None
        self._why: str | None = None

    def _fit(self, buckets: np.ndarray, history: Loads) -> None:
        n_layers, n, n_experts = buckets.shape
        train = self.train
        if train is not None and (train.n_layers, train.n_experts) != (n_layers, n_experts):
            raise ParameterError(
                f"lstm: the training trace has {train.n_layers} layers x {train.n_experts} "
                f"experts but the trace to forecast has {n_layers} x {n_experts}")
        if not self._can_reuse(history):
            source = bucket_means(train, self.step_bucket) if train is not None else buckets
            if source.shape[1] < self.min_buckets:
                raise ParameterError(f"lstm: the training trace needs at least "
                                     f"{self.min_buckets * self.bucket} steps")
            horizon = max(1, -(-max(self.options.horizons or (DEFAULT_HORIZON,))
                               // self.step_bucket))
            need = MIN_TRAIN + validation_buckets(source.shape[1], horizon)
            if source.shape[1] < need:
                with _deterministic(self.options.seed):
                    self.model = ShareLSTM(n_layers, n_experts,
                                           noise_scale(self._flat(source)),
                                           self._flat(source).mean(axis=0))
                self.model.eval()
                self._why = (f"too little history to train and validate on the horizon (it "
                             f"needs {(MIN_TRAIN + horizon) * self.step_bucket:,} steps): "
                             f"forecast with its {BASELINE * self.step_bucket}-step "
                             "moving-average baseline")
            else:
                with _deterministic(self.options.seed):
                    self.model = train_model(self._flat(source), n_layers, n_experts,
                                             lambda done, total: self._report(
                                                 "lstm: training", done, total), horizon)
                losses = self.model.validation_losses
                self._why = None if int(np.argmin(losses)) > 0 else (
                    "training never beat its baseline on the validation rollout: forecast "
                    f"with its {BASELINE * self.step_bucket}-step moving-average baseline")
            self._trained_on = HistoryMark.of(history)
        self.fallback = self._why
        self._context = self._flat(buckets[:, -CONTEXT:])

    def _can_reuse(self, history: Loads) -> bool:
        """Weights from a separate training trace always serve (same layers and experts);
        weights from an earlier history serve while it is fresh (see HistoryMark)."""
        mark = self._trained_on
        if mark is None:
            return False
        if self.train is not None:
            return (history.layers, history.n_experts) == (mark.layers, mark.n_experts)
        return mark.still_fresh(history, self.retrain_every)

    @staticmethod
    def _flat(buckets: np.ndarray) -> np.ndarray:
        """(L, n, E) -> (n, L*E): one feature vector per bucket."""
        return np.ascontiguousarray(buckets.transpose(1, 0, 2).reshape(buckets.shape[1], -1))

    def _forecast_buckets(self, k: int) -> np.ndarray:
        with _deterministic(self.options.seed):
            return rollout(self.model, self._context, k).transpose(1, 0, 2)
