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
# the time model (moetrace/placement/timing.py; docs/placement.md, "The time model")
#: achieved FLOP/s of one GPU on the experts' matrix products: about 40% of an H100 SXM's
#: dense bf16 peak (989 TFLOP/s), an assumed utilisation; measure yours (--token-seconds)
GPU_FLOPS = 400e12
#: FLOPs per token-slot and expert parameter in training: 2 forward + 4 backward (the usual
#: 6N rule); 2 for inference
FLOPS_PER_PARAM = 6.0
#: bytes/s into a GPU from a GPU of its node: NVLink 4 (H100) gives 450 GB/s each way; a
#: 42 MB expert in about 0.1 ms (the EPIC paper's figure) is 420 GB/s
INTRA_NODE_BANDWIDTH = 400e9
#: bytes/s into a GPU from another node: a 400 Gb/s (50 GB/s) InfiniBand NDR or RoCE NIC per
#: GPU; a 42 MB expert in about 1 ms over RDMA (EPIC) is 42 GB/s
INTER_NODE_BANDWIDTH = 50e9
#: how a re-plan is applied: sync (training stops for it) or async (copies beside training)
REARRANGEMENT = "sync"
#: the stop of a synchronous re-plan, beyond its transfers: vLLM's and SGLang's users report
#: 0.65-1.70 s per synchronous EPLB rearrangement; 1 s is inside that range
STALL_SECONDS = 1.0
#: the planner every plan is made with
PLANNER = "balanced"
#: a re-plan of the balanced planner may give up this much mean balancedness (on the steps
#: it is judged on) against a fresh plan to move fewer replicas; never below EPLB's plan
MOVE_TOLERANCE = 0.005
# the setting to pick (moetrace plan --recommend; docs/placement.md, "The setting to pick"):
# the grid searched. Intervals around SGLang's default (1,000 steps), windows around vLLM's
# (1,000 steps), and no, one or two redundant slots per GPU
#: re-plan intervals searched, training steps
RECOMMEND_INTERVALS = (500, 1000, 2000)
#: load windows searched (the window policy), training steps
RECOMMEND_WINDOWS = (500, 1000, 2000)
#: redundant slots searched, per GPU
RECOMMEND_REDUNDANT = (0, 1, 2)
#: the policies searched (each against the static placement)
RECOMMEND_POLICIES = ("window", "forecast", "adaptive")
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
