"""Simulation settings: the presets (:data:`PRESETS`) and the scenario knobs, validated once.

A :class:`SimConfig` is fully resolved: per-layer transient lengths are numbers of steps, so the
dynamics never have to guess a default again. Build one with :func:`make_config`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from moetrace.errors import ParameterError


@dataclass(frozen=True)
class Preset:
    """A model shape plus the transient lengths of its first and last MoE layer.

    ``transient_first``/``transient_last`` hold at ``reference_steps`` or more; shorter runs
    shrink every layer's transient in proportion (see :func:`default_transient`).
    """

    model: str
    n_layers: int
    n_experts: int
    steps: int
    transient_first: int
    transient_last: int
    reference_steps: int
    top_k: int = 1
    tokens_per_step: int = 256 * 2048
    expert_params: int | None = None  # one expert FFN's parameters, for move costs
    n_groups: int = 1  # expert groups (group-limited routing); see ``group_spread``
    group_spread: float = 0.0  # sd of a group's shared log preference
    scenario: tuple[tuple[str, Any], ...] = ()  # scenario knobs this preset sets


PRESETS: dict[str, Preset] = {
    # The paper: 125M is stable after about 5,000 iterations; shallow layers settle last.
    "gpt3-125m": Preset("GPT-3 Small 125M MoE (simulated)", n_layers=6, n_experts=16,
                        steps=10_000, transient_first=5_000, transient_last=2_500,
                        reference_steps=10_000, expert_params=2 * 768 * 3072),
    # Not given by the paper; same shape of settling, a little longer for the bigger model.
    "gpt3-350m": Preset("GPT-3 Medium 350M MoE (simulated)", n_layers=12, n_experts=128,
                        steps=20_000, transient_first=6_000, transient_last=3_000,
                        reference_steps=20_000, expert_params=2 * 1024 * 4096),
    # DeepSeek-V3 (arXiv 2412.19437): 61 layers, the first 3 dense, so 58 MoE layers; 256
    # routed experts in 8 groups, top-8 with node-limited routing (at most 4 groups per
    # token); sequences of 4,096 tokens, batch 15,360 after the ramp: 62,914,560 tokens per
    # step; an expert is a SwiGLU FFN of 3 x 7,168 x 2,048 parameters. Not published, so
    # assumed: the transient lengths (the 350M preset's, 6,000 / 3,000 steps at 20,000) and
    # the groups' shared preference (group_spread 0.3), the simulator's stand-in for group-
    # limited routing: counts are drawn from shares, tokens are not routed one by one.
    "deepseek-v3": Preset("DeepSeek-V3-shaped MoE (simulated)", n_layers=58, n_experts=256,
                          steps=100_000, transient_first=6_000, transient_last=3_000,
                          reference_steps=20_000, top_k=8, tokens_per_step=15_360 * 4_096,
                          expert_params=3 * 7_168 * 2_048, n_groups=8, group_spread=0.3),
    # The imbalance patterns of Megatron-LM's token-imbalance benchmark proposal (NVIDIA/
    # Megatron-LM pull request 7488, workloads W6 and W7), on a trace-sized shape of our
    # choosing (4 MoE layers x 32 experts, top-2, 65,536 tokens per step) without the
    # transient, so that the pattern is the imbalance. W6: a hot set of a quarter of the
    # experts takes 3 of every 4 tokens and moves on by its width every 3 steps (a plan
    # held for many steps goes stale at once; only spreading each hot set over the GPUs
    # helps). W7: 3 steady steps, then a burst step in which half the tokens go to a fixed
    # hot quarter of the experts (steady-state numbers hide the bursts). An expert is the
    # proposal's default: a gated FFN of hidden 512 and FFN 1,024 (3 x 512 x 1,024).
    "hotspot": Preset("Megatron W6 rotating hotspot (simulated)", n_layers=4,
                               n_experts=32, steps=10_000, transient_first=0,
                               transient_last=0, reference_steps=10_000, top_k=2,
                               tokens_per_step=65_536, expert_params=3 * 512 * 1024,
                               scenario=(("hotspot_share", 0.75), ("hotspot_width", 0.25),
                                         ("hotspot_period", 3))),
    "burst": Preset("Megatron W7 burst (simulated)", n_layers=4, n_experts=32, steps=10_000,
                    transient_first=0, transient_last=0, reference_steps=10_000, top_k=2,
                    tokens_per_step=65_536, expert_params=3 * 512 * 1024,
                    scenario=(("burst_every", 4), ("burst_length", 1), ("burst_share", 0.5),
                              ("hotspot_width", 0.25))),
}


def preset_names() -> str:
    """The presets, named as help and errors list them: ``gpt3-125m, gpt3-350m, ...``."""
    return ", ".join(PRESETS)


@dataclass(frozen=True)
class SimConfig:
    """Everything that determines a simulated trace, together with the seed."""

    preset: str
    model: str
    n_layers: int
    n_experts: int
    top_k: int
    tokens_per_step: int  # tokens per layer per step; the trace counts top_k slots per token
    steps: int
    #: per layer, the step at which the initial transient's volatility reaches exactly zero
    #: (0: stable from step 0; >= steps: never stable).
    transient: tuple[int, ...]
    #: (start, duration) pairs: fluctuation restarts at ``start`` and decays to zero by
    #: ``start + duration`` (a learning-rate restart, a data-mix change).
    reentries: tuple[tuple[int, int], ...] = ()
    amplitude: float = 1.2  # first layer's transient volatility, in logit units
    depth_ratio: float = 0.5  # deepest layer's transient amplitude relative to the first
    reentry_amplitude: float = 0.5  # a re-entry's amplitude relative to the layer's own
    n_groups: int = 1  # expert groups: consecutive experts sharing a group preference
    group_spread: float = 0.0  # sd of each group's log preference (0: no group structure)
    base_spread: float = 0.5  # sd of the log base preferences: persistently hot/cold experts
    drift: float = 0.04  # stationary sd of the slow stable drift of each expert's logit
    drift_knot: int = 2_000  # steps between the drift's random knots
    drift_memory: int = 20_000  # mean-reversion time of the drift, in steps
    swing_knot: int = 400  # steps between knots of the transient's slow swings
    jolt_knot: int = 40  # steps between knots of the transient's fast swings and collapses
    swing_weight: float = 0.7  # share of the transient volatility in slow swings ...
    jolt_weight: float = 0.6  # ... in fast swings ...
    jitter_weight: float = 0.25  # ... and in step-to-step jitter
    collapse_rate: float = 0.03  # probability that a fast-swing knot is an expert collapse
    collapse_depth: float = 4.0  # depth of a collapse, in units of the fast swings
    # imbalance patterns on top of the dynamics (Megatron-LM's W6 and W7; 0: off). A share
    # of a step's tokens goes evenly to a hot set of ``hotspot_width`` x experts:
    hotspot_width: float = 0.25  # the hot set's size, a fraction of the experts (>= 1)
    hotspot_share: float = 0.0  # rotating hotspot: the hot set's share of every step
    hotspot_period: int = 3  # ... which moves on by its width every this many steps
    burst_every: int = 0  # bursts: one starts every this many steps (0: none) ...
    burst_length: int = 1  # ... lasts this many steps (the last of each period) ...
    burst_share: float = 0.5  # ... and sends this share of its tokens to the first hot set

    def hot_count(self) -> int:
        """Experts in a hot set: ``hotspot_width`` of them, at least one."""
        return max(1, round(self.hotspot_width * self.n_experts))

    @property
    def slots_per_step(self) -> int:
        """Counts per (step, layer): each token fills ``top_k`` expert slots."""
        return self.tokens_per_step * self.top_k

    def layer_amplitudes(self) -> list[float]:
        """Transient amplitude per layer: the first layer swings hardest, the deepest least."""
        if self.n_layers == 1:
            return [self.amplitude]
        return [self.amplitude * self.depth_ratio ** (i / (self.n_layers - 1))
                for i in range(self.n_layers)]


#: Scenario knobs that ``make_config`` (and ``simulate_trace(**scenario)``) accept by name.
SCENARIO_KNOBS = tuple(f.name for f in fields(SimConfig)
                       if f.name not in {"preset", "model", "n_layers", "n_experts", "top_k",
                                         "tokens_per_step", "steps", "n_groups"})


def default_transient(preset: Preset, n_layers: int, steps: int) -> tuple[int, ...]:
    """Transient length per layer, linear from the first to the last MoE layer.

    Runs of ``reference_steps`` or more get the preset's lengths; a shorter run gets them
    scaled by ``steps / reference_steps``, so the transient keeps the same share of the trace.
    """
    scale = min(1.0, steps / preset.reference_steps)
    if n_layers == 1:
        return (round(preset.transient_first * scale),)
    span = preset.transient_last - preset.transient_first
    return tuple(round((preset.transient_first + span * i / (n_layers - 1)) * scale)
                 for i in range(n_layers))


def make_config(preset: str, *, steps: int | None = None, layers: int | None = None,
                experts: int | None = None, top_k: int | None = None,
                tokens_per_step: int | None = None, **scenario: Any) -> SimConfig:
    """A validated :class:`SimConfig` from a preset name, shape overrides and scenario knobs."""
    if preset not in PRESETS:
        raise ParameterError(f"unknown simulation preset '{preset}' (known: {preset_names()})")
    unknown = sorted(set(scenario) - set(SCENARIO_KNOBS))
    if unknown:
        raise ParameterError(f"unknown simulation setting '{unknown[0]}' "
                             f"(known: {', '.join(SCENARIO_KNOBS)})")
    base = PRESETS[preset]
    shape = {"steps": base.steps if steps is None else steps,
             "layers": base.n_layers if layers is None else layers,
             "experts": base.n_experts if experts is None else experts,
             "top-k": base.top_k if top_k is None else top_k,
             "tokens-per-step": base.tokens_per_step if tokens_per_step is None
             else tokens_per_step}
    for name, value in shape.items():
        _check_int(f"--{name}", value, minimum=2 if name == "experts" else 1)
    if shape["top-k"] > shape["experts"]:
        raise ParameterError(f"--top-k {shape['top-k']} exceeds --experts {shape['experts']}")
    n_steps, n_layers = shape["steps"], shape["layers"]
    knobs = dict(scenario)
    knobs["transient"] = _transient(knobs.get("transient"), base, n_layers, n_steps)
    knobs["reentries"] = _reentries(knobs.get("reentries", ()), n_steps)
    knobs.setdefault("group_spread", base.group_spread)
    for name, value in base.scenario:
        knobs.setdefault(name, value)
    groups = base.n_groups if shape["experts"] % base.n_groups == 0 else 1
    config = SimConfig(preset=preset, model=base.model, n_layers=n_layers, n_groups=groups,
                       n_experts=shape["experts"], top_k=shape["top-k"],
                       tokens_per_step=shape["tokens-per-step"], steps=n_steps, **knobs)
    _check_knobs(config)
    return config


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ParameterError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _transient(value: Any, preset: Preset, n_layers: int, steps: int) -> tuple[int, ...]:
    """None: the preset's default; one int: every layer; a sequence: one per layer."""
    if value is None:
        return default_transient(preset, n_layers, steps)
    values = [value] * n_layers if isinstance(value, int) else list(value)
    if len(values) != n_layers:
        raise ParameterError(f"transient gives {len(values)} lengths for {n_layers} layers")
    for i, v in enumerate(values):
        _check_int(f"transient of layer {i}", v, minimum=0)
    return tuple(values)


def _reentries(value: Any, steps: int) -> tuple[tuple[int, int], ...]:
    out = []
    for item in value:
        try:
            start, duration = item
        except (TypeError, ValueError):
            raise ParameterError(f"a re-entry is a (start, duration) pair, got {item!r}") \
                from None
        _check_int("re-entry start", start, minimum=0)
        _check_int("re-entry duration", duration, minimum=1)
        if start >= steps:
            raise ParameterError(f"re-entry at step {start} is past the last step {steps - 1}")
        out.append((start, duration))
    return tuple(sorted(out))


def _check_knobs(config: SimConfig) -> None:
    for name in ("amplitude", "reentry_amplitude", "base_spread", "group_spread", "drift",
                 "swing_weight",
                 "jolt_weight", "jitter_weight", "collapse_depth"):
        value = getattr(config, name)
        if not isinstance(value, (int, float)) or not value >= 0:
            raise ParameterError(f"{name} must be a number >= 0, got {value!r}")
    for name in ("depth_ratio", "collapse_rate", "hotspot_width", "hotspot_share",
                 "burst_share"):
        value = getattr(config, name)
        if not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise ParameterError(f"{name} must be between 0 and 1, got {value!r}")
    for name in ("drift_knot", "drift_memory", "swing_knot", "jolt_knot", "hotspot_period",
                 "burst_length"):
        _check_int(name, getattr(config, name), minimum=1)
    _check_int("burst_every", config.burst_every, minimum=0)
    if config.burst_every and config.burst_length > config.burst_every:
        raise ParameterError(f"burst_length {config.burst_length} exceeds burst_every "
                             f"{config.burst_every}")
