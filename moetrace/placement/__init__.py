"""Expert placement: plans from load estimates, and what each policy buys over a trace.

- :func:`rebalance_experts`: a drop-in for DeepSeek EPLB's planner (numpy; planners ``eplb``
  and the default ``balanced``, never worse than EPLB's on what it is judged by: the loads,
  or per-step samples of the interval the plan is for).
- :class:`Cluster`: GPUs, nodes, groups and replica slots; plans as replica counts per GPU,
  re-plans that move little (moetrace.placement.moves); :func:`expected_balancedness`, what
  a plan reaches under given loads (moetrace.placement.scoring, the one cost model).
- :class:`Estimates`: the window, forecast and hindsight load estimates (shares, cached by
  step) and their per-step samples, which every plan is made from.
- :mod:`moetrace.placement.policies`: static, window, forecast, hindsight and the
  state-aware adaptive policy.
- :func:`replay`: every policy over a trace, with balancedness, modeled compute and move
  seconds (:class:`TimeModel`) and bytes moved per layer and state.
- :func:`recommend`: the re-plan setting that saves the most modeled time, from a small grid.
- :mod:`moetrace.placement.formats`: the plan as SGLang's and vllm-ascend's files.
- :class:`PlacementPlan`, :func:`read_plan`: the plan document (moetrace.placement.document).
"""

from moetrace.placement.cluster import (Cluster, balancedness, default_cluster,
                                        expected_balancedness, replica_counts)
from moetrace.placement.document import PlacementPlan, read_plan
from moetrace.placement.estimates import Estimates
from moetrace.placement.policies import DEFAULT_POLICIES, POLICIES, make_policies
from moetrace.placement.rebalance import gpu_loads, rebalance_experts
from moetrace.placement.replay import (BYTES_PER_PARAM, PlacementReplay, expert_parameters,
                                       replay)
from moetrace.placement.timing import TimeModel

__all__ = ["BYTES_PER_PARAM", "Cluster", "DEFAULT_POLICIES", "Estimates", "POLICIES",
           "PlacementPlan", "PlacementReplay", "TimeModel", "balancedness", "default_cluster",
           "expected_balancedness", "expert_parameters", "gpu_loads", "make_policies",
           "read_plan", "rebalance_experts", "replay", "replica_counts"]
