"""lstm: one small PyTorch LSTM shared by every (layer, expert) series of the trace.

The paper's LSTM reads the shares of all experts of all layers as one vector per step. Trained
on a run's own history that is one sequence to learn from, and moetrace's version of it needed
4,560 steps before it could train and validate a 2,000-step forecast: it ran at none of the
report's origins on the bundled samples or the SmartMoE trace. This model learns from what a
run has: each of the L*E share series is put on its own scale (moetrace/predictors/
lstm_series.py: its departure from its recent level in units of its own noise, its level, how
much more than sampling noise it moves, how turbulent its layer is), and one LSTM, trained on
windows of all of them, forecasts for each series a correction to its level for blocks of leads
(1, 2-3, 4-7, ... buckets ahead), in units of its noise. The data is L*E series x windows, so
640 steps of history are enough to train on (``MIN_TRAIN`` + ``MIN_VALIDATION`` buckets).

The model is residual around a baseline: the head starts at zero, so the untrained model
forecasts each series' level (the mean of its last ``BASELINE`` buckets, 100 steps) held
constant. Training uses only buckets before the origin. The last ``validation_buckets`` (the
horizon, or half the history when that is shorter) are held out; the model trains on the
newest windows before them (as many as fill a batch from every series), and early stopping
keeps the epoch whose forecasts from ``VALIDATION_ORIGINS`` origins in the held-out buckets have
the lowest error rate (the report's metric, each layer renormalised); epoch 0, the baseline,
counts. If no epoch beats it the forecast is the baseline and ``fallback`` says so, as it does
when the history is too short to train. Leads beyond the validated buckets, or beyond the lead
blocks that had training targets, hold the last such lead's forecast: the model is never run
further than it was trained and checked. Forecasts are non-negative and sum to 1 per layer and
step. Seeded and deterministic on CPU (one thread). In a backtest the same object retrains
once the history has doubled or grown by ``retrain_every`` steps (default 10,000), and at the
next origin after a training that kept the baseline; in between it keeps its weights and reads
the new history.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager

import numpy as np

from moetrace.defaults import HORIZON
from moetrace.errors import MissingExtraError, ParameterError
from moetrace.predictors.buckets import bucket_means
from moetrace.predictors.lstm_series import (
    BASELINE,
    BLOCKS,
    LOOKBACK,
    N_FEATURES,
    as_series,
    block_of,
    block_targets,
    block_weights,
    features,
    tokens_per_bucket,
)
from moetrace.predictors.template import BucketPredictor, HistoryMark
from moetrace.trace.shares import Loads

try:
    import torch
    from torch import nn
except ImportError:  # pragma: no cover - exercised only without the extra
    raise MissingExtraError("torch", "lstm", "the lstm predictor") from None

DEFAULT_BUCKET = 20
RETRAIN_EVERY = 10_000
HIDDEN = 16
WINDOW = 64  # buckets per training sequence, and of context read before forecasting
BATCH = 512  # training sequences per epoch (one optimiser step), drawn from every series
MAX_EPOCHS = 150
PATIENCE = 15
#: Epochs always trained before early stopping may end training: the first Adam steps of the
#: correction often make the forecast worse before it gets better.
MIN_EPOCHS = 30
MIN_IMPROVEMENT = 1e-3  # relative decrease of the validation error that counts as progress
LEARNING_RATE = 3e-3
#: Largest correction of a forecast, in log-share units (a factor of e**3 either way).
MAX_LOG_CORRECTION = 3.0
#: Buckets of (recent) history trained and validated on: 10,000 steps at the default bucket,
#: so a long transient start does not dominate what the model learns about the current state.
TRAIN_BUCKETS = 500
#: Fewest buckets trained on before the validation buckets, and fewest validated (unless the
#: horizon is shorter): with less history the model is not trained and forecasts with its
#: baseline, saying so. 32 buckets are 640 steps at the default bucket.
MIN_TRAIN = 16
MIN_VALIDATION = 16
#: Origins the validation forecasts start from (the first at the end of the training buckets)
VALIDATION_ORIGINS = 4
#: the horizon validated on when none is given (training steps): predict's default
DEFAULT_HORIZON = HORIZON


def validation_buckets(n: int, horizon: int) -> int:
    """Buckets held out at the end of ``n`` for early stopping: the horizon, or half the
    history when that is shorter, but at least MIN_VALIDATION (or the horizon, if shorter)."""
    return min(horizon, max(MIN_VALIDATION, n // 2))


def min_buckets_to_train(horizon: int) -> int:
    """Fewest buckets of history the model trains on for ``horizon`` buckets."""
    return MIN_TRAIN + min(horizon, MIN_VALIDATION)


class SeriesLSTM(nn.Module):
    """(B, T, N_FEATURES) features of B series -> (B, T, BLOCKS) corrections of each series'
    level for each lead block, in units of its noise (zero before training).

    Features are standardised with the training data's per-feature mean and spread
    (``center``, ``scale``) before the LSTM reads them."""

    def __init__(self, center: np.ndarray, scale: np.ndarray, hidden: int = HIDDEN):
        super().__init__()
        self.register_buffer("center", torch.as_tensor(center, dtype=torch.float32))
        self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float32))
        self.lstm = nn.LSTM(N_FEATURES, hidden, batch_first=True)
        self.head = nn.Linear(hidden, BLOCKS)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        #: buckets ahead the forecast was validated over; later leads hold the last of them
        self.validated = 1
        #: lead blocks trained (with targets); later blocks hold the last of them
        self.blocks = 1
        #: per epoch, epoch 0 (the untrained model, the baseline) first; empty: not trained
        self.validation_losses: list[float] = []
        self.best_epoch = 0

    def forward(self, x):
        out, _ = self.lstm((x - self.center) / self.scale)
        return self.head(out)


def corrected(correction, level, noise):
    """Forecast shares from corrections (noise units) of a level: level x exp(correction x
    noise / level), so a small correction c moves the share by about c noise levels; the
    log-share change is at most MAX_LOG_CORRECTION. Works on tensors of matching shape."""
    unit = torch.clamp(noise / torch.clamp(level, min=1e-12), max=1.0)
    return level * torch.exp(torch.clamp(correction * unit, -MAX_LOG_CORRECTION,
                                         MAX_LOG_CORRECTION))


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


def _starts(stop: int, length: int) -> np.ndarray:
    """Starts of overlapping windows of ``length`` buckets ending at or before ``stop``."""
    starts = np.arange(0, stop - length + 1, max(1, length // 2))
    return starts if starts[-1] == stop - length else np.r_[starts, stop - length]


def forecast_series(model: SeriesLSTM, feats: np.ndarray, level: np.ndarray,
                    noise: np.ndarray, n_layers: int, k: int) -> np.ndarray:
    """Read the last WINDOW buckets of (S, n, F) features, forecast k buckets: (L, k, E)
    shares, each layer renormalised; leads beyond ``model.validated`` hold its forecast."""
    return forecasts_from(model, feats, level, noise, n_layers, [feats.shape[1]], k)[0]


def forecasts_from(model: SeriesLSTM, feats: np.ndarray, level: np.ndarray,
                   noise: np.ndarray, n_layers: int, origins: list[int],
                   k: int | list[int]) -> list[np.ndarray]:
    """:func:`forecast_series` from each of ``origins`` (reading the WINDOW buckets before
    it) over ``k`` buckets (one number, or one per origin), the LSTM run once for all."""
    ks = [k] * len(origins) if isinstance(k, int) else k
    contexts = [feats[:, max(0, o - WINDOW):o] for o in origins]
    with torch.no_grad():
        if len({c.shape[1] for c in contexts}) == 1:  # one LSTM call for every origin
            batch = torch.as_tensor(np.concatenate(contexts), dtype=torch.float32)
            corrections = model(batch)[:, -1].double().split(feats.shape[0])
        else:  # an origin within WINDOW buckets of the start reads a shorter context
            corrections = [model(torch.as_tensor(c, dtype=torch.float32))[:, -1].double()
                           for c in contexts]
        out = []
        for o, c, steps in zip(origins, corrections, ks):
            blocks = corrected(c, torch.as_tensor(level[:, o - 1:o]),
                               torch.as_tensor(noise[:, o - 1:o])).numpy()
            leads = np.minimum(block_of(np.minimum(np.arange(1, steps + 1), model.validated)),
                               model.blocks - 1)
            out.append(_per_layer(blocks[:, leads], n_layers))
    return out


def _per_layer(series: np.ndarray, n_layers: int) -> np.ndarray:
    """(L*E, k) shares -> (L, k, E), every layer and step summing to 1."""
    n_series, k = series.shape
    out = series.reshape(n_layers, n_series // n_layers, k).transpose(0, 2, 1)
    return out / out.sum(axis=-1, keepdims=True)


def validation_origins(n: int, held: int) -> list[int]:
    """Where the validation forecasts start: VALIDATION_ORIGINS buckets spread over the first
    half of the last ``held`` of ``n``, the first right after the training buckets. One
    forecast is one draw of the future, and the best of many epochs on one draw is often luck."""
    gap = max(1, held // (2 * VALIDATION_ORIGINS))
    return [o for o in range(n - held, n - held + VALIDATION_ORIGINS * gap, gap) if o < n]


def validation_error(model: SeriesLSTM, feats: np.ndarray, level: np.ndarray,
                     noise: np.ndarray, x: np.ndarray, n_layers: int,
                     origins: list[int]) -> float:
    """Error rate of the forecasts from each of ``origins`` (reading only the buckets before
    it) over the rest of the (S, n) shares ``x``, as they are used (each layer renormalised):
    per origin the mean over layers and buckets of the sum over experts of |f - a|, then the
    mean over origins."""
    n = x.shape[1]
    forecasts = forecasts_from(model, feats, level, noise, n_layers, origins,
                               [n - o for o in origins])
    return float(np.mean([np.abs(f - _per_layer(x[:, o:], n_layers)).sum(axis=-1).mean()
                          for o, f in zip(origins, forecasts)]))


def train_model(x: np.ndarray, tokens: np.ndarray, horizon: int, seed: int = 0,
                progress=None) -> SeriesLSTM:
    """Fit on (S, n) bucket shares (the last TRAIN_BUCKETS are used): windows drawn from every
    series before the last ``validation_buckets`` (n, horizon), early stopping on the error
    rate of the forecast from there over those buckets. Call inside ``_deterministic``."""
    x = x[:, -TRAIN_BUCKETS:]
    n_series, n = x.shape
    n_layers = len(tokens)
    held = validation_buckets(n, horizon)
    split = n - held
    feats, level, noise = features(x, tokens)
    train_feats = feats[:, :split]
    flat = train_feats.reshape(-1, N_FEATURES)
    model = SeriesLSTM(flat.mean(axis=0), np.maximum(flat.std(axis=0), 1e-6))
    model.validated = held

    targets, known = block_targets(x, split)
    length = min(WINDOW, split)
    # the newest windows, as many as it takes to fill a batch from every series: the recent
    # past says most about the near future (a transient start would otherwise teach moves
    # the stable state never makes)
    starts = _starts(split, length)[-max(1, -(-BATCH // n_series)):]
    pairs = np.stack(np.meshgrid(np.arange(n_series), starts, indexing="ij"), -1).reshape(-1, 2)
    # each bucket forecasts every lead block it has a target for, weighted by how much of the
    # horizon's error that block makes; a block with targets at fewer than a quarter of a
    # window's buckets is not trained, and its leads hold the last trained block's forecast
    trained = known[starts[0]:].sum(axis=0) >= max(1, length // 4)
    model.blocks = max(1, int(trained.sum()))
    weight = known * block_weights(horizon)[None]  # (split, BLOCKS)
    weight[:, model.blocks:] = 0
    # each (layer, window) counts the same, relative to the baseline's error there: windows of
    # fast transient moves (errors hundreds of times the stable state's) would otherwise
    # decide what the model learns about a stable one
    base_error = np.abs(level[:, :split, None] - targets) * weight[None]  # (S, split, BLOCKS)
    c = np.concatenate([np.zeros((n_series, 1)), np.cumsum(base_error.sum(-1), 1)], 1)
    per_window = (c[:, starts + length] - c[:, starts]).reshape(n_layers, -1, len(starts))
    scale = np.maximum(per_window.mean(axis=1), 1e-12)  # (L, windows)
    n_experts = n_series // n_layers
    norm = torch.as_tensor(scale[pairs[:, 0] // n_experts, np.searchsorted(starts, pairs[:, 1])],
                           dtype=torch.float32)
    weight = torch.as_tensor(weight, dtype=torch.float32)
    tensors = [torch.as_tensor(a, dtype=torch.float32) for a in (
        train_feats, targets, level[:, :split, None], noise[:, :split, None])]
    rng = np.random.default_rng(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    origins = validation_origins(n, held)

    def validation_loss() -> float:
        model.eval()
        return validation_error(model, feats, level, noise, x, n_layers, origins)

    best, best_state, waited = validation_loss(), copy.deepcopy(model.state_dict()), 0
    model.validation_losses = [best]
    for epoch in range(MAX_EPOCHS):
        model.train()
        pick = rng.choice(len(pairs), size=min(BATCH, len(pairs)), replace=False)
        rows, cols = pairs[pick, :1], pairs[pick, 1:] + np.arange(length)[None]
        f, y, lev, sd = (t[rows, cols] for t in tensors)
        optimizer.zero_grad()
        error = (corrected(model(f), lev, sd) - y).abs() * weight[cols]
        (error.sum(dim=(1, 2)) / norm[pick]).mean().backward()
        optimizer.step()
        val = validation_loss()
        model.validation_losses.append(val)
        if val < best * (1 - MIN_IMPROVEMENT):
            best, best_state, waited = val, copy.deepcopy(model.state_dict()), 0
            model.best_epoch = epoch + 1
        else:
            waited += 1
        if progress:
            progress(epoch + 1, MAX_EPOCHS)
        if waited >= PATIENCE and epoch + 1 >= MIN_EPOCHS:
            break
    best_epoch, losses = model.best_epoch, model.validation_losses
    model.load_state_dict(best_state)
    model.best_epoch, model.validation_losses = best_epoch, losses
    model.eval()
    return model


class LSTMPredictor(BucketPredictor):
    """One LSTM shared by every (layer, expert) series, trained on history or --train-trace."""

    name = "lstm"
    default_bucket = DEFAULT_BUCKET
    min_buckets = BASELINE  # the baseline's window: a forecast needs at least that

    def __init__(self, options=None, *, retrain_every: int = RETRAIN_EVERY, **inputs):
        super().__init__(options, **inputs)
        self.retrain_every = retrain_every
        self.model: SeriesLSTM | None = None
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
            learn = train if train is not None else history
            source = as_series(bucket_means(train, self.step_bucket) if train is not None
                               else buckets)
            tokens = tokens_per_bucket(learn, self.step_bucket)
            horizon = max(1, -(-max(self.options.horizons or (DEFAULT_HORIZON,))
                               // self.step_bucket))
            need = min_buckets_to_train(horizon)
            with _deterministic(self.options.seed):
                if source.shape[1] < need:
                    self.model = _untrained(source, tokens)
                    what = "the training trace has" if train is not None else "it has"
                    self._why = (f"too little history to train: {what} "
                                 f"{source.shape[1] * self.step_bucket:,} steps and needs "
                                 f"{need * self.step_bucket:,} ({MIN_TRAIN} buckets of "
                                 f"{self.step_bucket} steps to train on and "
                                 f"{min(horizon, MIN_VALIDATION)} to validate on): forecast "
                                 f"with its {BASELINE * self.step_bucket}-step moving average")
                else:
                    self.model = train_model(source, tokens, horizon, self.options.seed,
                                             lambda done, total: self._report(
                                                 "lstm: training", done, total))
                    self._why = None if self.model.best_epoch > 0 else (
                        "training never beat its baseline on the validation forecast: "
                        f"forecast with its {BASELINE * self.step_bucket}-step moving average")
            self._trained_on = HistoryMark.of(history)
        self.fallback = self._why
        x = as_series(buckets[:, -(WINDOW + LOOKBACK):])
        self._context = (x, tokens_per_bucket(history, self.step_bucket))

    def _can_reuse(self, history: Loads) -> bool:
        """Weights from a separate training trace always serve (same layers and experts);
        weights from an earlier history serve while it is fresh (see HistoryMark)."""
        mark = self._trained_on
        if mark is None:
            return False
        if self.train is not None:
            return (history.layers, history.n_experts) == (mark.layers, mark.n_experts)
        if self._why is not None:  # the baseline is no model to keep: any new data retrains
            return mark.growth(history) == 0
        return mark.still_fresh(history, self.retrain_every)

    def _forecast_buckets(self, k: int) -> np.ndarray:
        x, tokens = self._context
        feats, level, noise = features(x, tokens)
        with _deterministic(self.options.seed):
            return forecast_series(self.model, feats, level, noise, len(tokens), k)


def _untrained(x: np.ndarray, tokens: np.ndarray) -> SeriesLSTM:
    """The model before training (its forecast is the baseline), standardised on ``x``."""
    flat = features(x, tokens)[0].reshape(-1, N_FEATURES)
    model = SeriesLSTM(flat.mean(axis=0), np.maximum(flat.std(axis=0), 1e-6))
    model.eval()
    return model
