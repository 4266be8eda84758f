"""Every default a user can see, in one light module (no numpy, polars or torch).

The library modules take their defaults from here and the CLI shows them in ``--help``
without importing the heavy machinery behind them. Windows, histories and horizons are in
training steps (see moetrace/trace/shares.py, "One time axis").
"""

TRANSIENT, STABLE = "transient", "stable"

# states (moetrace analyze; docs/analysis.md)
#: sliding window of the fluctuation statistics, in training steps
STATE_WINDOW = 100
#: change-point sensitivity (higher: more, shorter segments)
SENSITIVITY = 1.0
#: a window is "as quiet as noise" when its share variance is at most this multiple of the
#: layer's noise variance
STABLE_RATIO = 2.0

# predictors (moetrace predict; docs/predictors.md)
#: sw_avg's window: the paper's method with the production window (vLLM EPLB: 1,000 steps)
SW_AVG_WINDOW = 1000
#: forecast horizon of `predict`, in training steps
HORIZON = 1000

# backtests (moetrace report; docs/report.md)
HORIZONS = (1000, 2000)
#: origins spread over the trace when neither a stride nor a count is given
ORIGINS = 12
#: training steps of history the first origin needs
MIN_HISTORY = 1000
#: the look-ahead bound: each step forecast by the mean of the actual shares this many
#: training steps on either side (itself left out), see docs/metrics.md
LOOKAHEAD_RADIUS = 200
