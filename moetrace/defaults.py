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
#: the look-ahead reference: each step forecast by the mean of the actual shares this many
#: training steps on either side (itself left out), see docs/metrics.md
LOOKAHEAD_RADIUS = 200

# placement (moetrace plan, simulate and watch; docs/placement.md). Vocabulary: the
# *planner* is the rebalance algorithm (balanced, eplb); a *policy* is a replay strategy
# (static, window, forecast, adaptive, oracle); the *re-plan interval* is how long a plan is
# held (the *sampling interval* is the trace's steps per sample); the *load window* is what
# the window estimate sums (the *state window* is the state analysis's, the *sw_avg window*
# the sliding-window predictor's).
#: training steps a placement is held between re-plans (SGLang re-balances every 1,000)
REPLAN_INTERVAL = 1000
#: training steps of counts the window estimate sums (vLLM EPLB's window_size)
LOAD_WINDOW = 1000
#: a layer is re-planned when a fresh plan's expected balancedness beats the plan in force
#: by more than this (the adaptive policy and watch)
REPLAN_GAIN = 0.02
#: the adaptive policy re-plans a transient layer this many times per re-plan interval
TRANSIENT_SPLITS = 4
#: bytes moved per expert parameter: 16 for a training expert with its Adam state in mixed
#: precision, 2 for a read-only bf16 replica
BYTES_PER_PARAM = 16
#: the planner every plan is made with
PLANNER = "balanced"
#: the report's cluster when none is given: the most GPUs up to this that divide the experts
REPORT_GPUS = 8

# recording and watching (moetrace record, watch; docs/recording.md, docs/watch.md)
#: steps per part file a recorder writes (a killed job loses at most these)
FLUSH_EVERY = 100
#: steps the demo trainer trains when not told
DEMO_STEPS = 3000
#: seconds between a watch's looks at the recording
POLL_SECONDS = 1.0
#: training steps the other ranks may run ahead of a silent rank before watch merges without
STALL_STEPS = 2000
