"""lstm: one multivariate PyTorch LSTM over the shares of all experts of all layers.

As in the paper, the input at each (bucket) step is the vector of every expert's share in every
MoE layer and the output is the next step's shares of all experts, a softmax per layer; longer
horizons are reached by feeding forecasts back in. The output head predicts a change of the
log-shares relative to the current step and starts at zero, so an untrained model is the naive
forecast and training only has to learn what departs from it (a constant trace stays constant,
to float32 precision). Training uses only recent history before the origin (its last 15% of
buckets is the validation slice for early stopping) or a separate training trace; it is seeded
and deterministic on CPU. In a backtest the same object retrains only once the history has
doubled or grown by ``retrain_every`` steps (default 10,000); in between it keeps the weights
from the earlier, shorter history and only conditions on the new one.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager

import numpy as np

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
MIN_IMPROVEMENT = 1e-3  # relative decrease of the validation loss that counts as progress
LEARNING_RATE = 1e-3
VALIDATION = 0.15
CONTEXT = 512  # buckets of history the model reads before forecasting
#: Buckets of (recent) history trained on: 10,000 steps at the default bucket, so a long
#: transient start does not dominate what the model learns about the current state.
TRAIN_BUCKETS = 500
EPS = 1e-9


class ShareLSTM(nn.Module):
    """(B, T, L*E) shares -> (B, T, L, E) next-step shares, softmax per layer."""

    def __init__(self, n_layers: int, n_experts: int, hidden: int = HIDDEN):
        super().__init__()
        self.n_layers, self.n_experts = n_layers, n_experts
        self.lstm = nn.LSTM(n_layers * n_experts, hidden, batch_first=True)
        self.head = nn.Linear(hidden, n_layers * n_experts)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, shares, state=None):
        b, t, _ = shares.shape
        out, state = self.lstm(shares * self.n_experts - 1.0, state)
        logits = torch.log(shares + EPS) + self.head(out)
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


def _windows(series: torch.Tensor, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Training pairs (inputs, next-step targets) from overlapping windows ending before stop."""
    length = min(WINDOW, stop - 1)
    starts = list(range(0, stop - length, max(1, length // 2)))
    if starts[-1] != stop - 1 - length:
        starts.append(stop - 1 - length)
    x = torch.stack([series[s:s + length] for s in starts])
    y = torch.stack([series[s + 1:s + length + 1] for s in starts])
    return x, y


def train_model(series: np.ndarray, n_layers: int, n_experts: int,
                progress=None) -> ShareLSTM:
    """Fit on the last TRAIN_BUCKETS of (n, L*E) bucket shares; early stopping on the error of
    a forecast over their last 15% (epoch 0, the untrained model, is the naive forecast)."""
    series = series[-TRAIN_BUCKETS:]
    n = len(series)
    split = min(n - 1, max(2, int(round(n * (1 - VALIDATION)))))
    data = torch.as_tensor(series, dtype=torch.float32)
    model = ShareLSTM(n_layers, n_experts)
    x, y = _windows(data, split)
    y = y.view(*y.shape[:2], n_layers, n_experts)
    target_val = data[split:].view(-1, n_layers, n_experts)
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)

    def validation_loss() -> float:
        """Error of a forecast from the split over the whole validation slice, as in use."""
        model.eval()
        pred = torch.as_tensor(rollout(model, series[:split], n - split), dtype=torch.float32)
        return ((pred - target_val) * n_experts).pow(2).mean().item()

    # epoch 0 is the untrained model (the naive forecast): training must beat it to count
    best, best_state, waited = validation_loss(), copy.deepcopy(model.state_dict()), 0
    for epoch in range(MAX_EPOCHS):
        model.train()
        optimizer.zero_grad()
        pred, _ = model(x)
        ((pred - y) * n_experts).pow(2).mean().backward()
        optimizer.step()
        val = validation_loss()
        if val < best * (1 - MIN_IMPROVEMENT):
            best, best_state, waited = val, copy.deepcopy(model.state_dict()), 0
        else:
            waited += 1
        if progress:
            progress(epoch + 1, MAX_EPOCHS)
        if waited >= PATIENCE:
            break
    model.load_state_dict(best_state)
    model.eval()
    return model


def rollout(model: ShareLSTM, context: np.ndarray, k: int) -> np.ndarray:
    """Read (n, L*E) context buckets, then forecast k buckets by feeding forecasts back."""
    out = np.empty((k, model.n_layers, model.n_experts))
    with torch.no_grad():
        pred, state = model(torch.as_tensor(context[None], dtype=torch.float32))
        step = pred[:, -1:]
        for j in range(k):
            out[j] = step[0, 0].double().numpy()
            if j + 1 < k:
                step, state = model(step.reshape(1, 1, -1), state)
    return out


class LSTMPredictor(BucketPredictor):
    """One multivariate LSTM (all experts of all layers), trained on history or --train-trace."""

    name = "lstm"
    default_bucket = DEFAULT_BUCKET
    min_buckets = 16

    def __init__(self, options=None, *, retrain_every: int = RETRAIN_EVERY):
        super().__init__(options)
        self.retrain_every = retrain_every
        self.model: ShareLSTM | None = None
        self._trained_on: HistoryMark | None = None

    def _fit(self, buckets: np.ndarray, history: Loads) -> None:
        n_layers, n, n_experts = buckets.shape
        train = self.options.train
        if train is not None and (train.n_layers, train.n_experts) != (n_layers, n_experts):
            raise ParameterError(
                f"lstm: the training trace has {train.n_layers} layers x {train.n_experts} "
                f"experts but the trace to forecast has {n_layers} x {n_experts}")
        if not self._can_reuse(history):
            source = bucket_means(train.shares, self.bucket) if train is not None else buckets
            if source.shape[1] < self.min_buckets:
                raise ParameterError(f"lstm: the training trace needs at least "
                                     f"{self.min_buckets * self.bucket} steps")
            with _deterministic(self.options.seed):
                self.model = train_model(self._flat(source), n_layers, n_experts,
                                         lambda done, total: self._report(
                                             "lstm: training", done, total))
            self._trained_on = HistoryMark.of(history)
        self._context = self._flat(buckets[:, -CONTEXT:])

    def _can_reuse(self, history: Loads) -> bool:
        """Weights from a separate training trace always serve (same layers and experts);
        weights from an earlier history serve while it is fresh (see HistoryMark)."""
        mark = self._trained_on
        if mark is None:
            return False
        if self.options.train is not None:
            return (history.layers, history.n_experts) == (mark.layers, mark.n_experts)
        return mark.still_fresh(history, self.retrain_every)

    @staticmethod
    def _flat(buckets: np.ndarray) -> np.ndarray:
        """(L, n, E) -> (n, L*E): one feature vector per bucket."""
        return np.ascontiguousarray(buckets.transpose(1, 0, 2).reshape(buckets.shape[1], -1))

    def _forecast_buckets(self, k: int) -> np.ndarray:
        with _deterministic(self.options.seed):
            return rollout(self.model, self._context, k).transpose(1, 0, 2)
