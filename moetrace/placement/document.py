"""The plan document (``"schema": "moetrace.plan", "version": 1``): one writer, one reader.

``moetrace plan -o`` and ``moetrace watch --plan-out`` write it, both through
:func:`plan_document`; a training loop or a test reads it back with :func:`read_plan`. Its
keys are :data:`PLAN_KEYS` (docs/placement.md has the table, and a test holds the two
together). :class:`PlacementPlan` is the plan it records.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from moetrace.errors import ParameterError
from moetrace.placement.cluster import Cluster, Layout
from moetrace.placement.formats import load

SCHEMA = "moetrace.plan"
SCHEMA_VERSION = 1

#: every key of the document, with the keys of its nested objects (``cluster.gpus``, the
#: entries of ``expected`` as ``expected[].layer``), in the order written
PLAN_KEYS = (
    "schema", "version", "plan_version", "trace", "at", "interval", "source", "predictor",
    "fallback", "cluster", "cluster.gpus", "cluster.nodes", "cluster.groups",
    "cluster.replicas", "cluster.rebalance", "layers", "source_layers", "phy2log", "log2phy",
    "logcnt", "estimated_shares", "expected", "expected[].layer", "expected[].balancedness",
    "expected[].static_balancedness",
)


@dataclass
class PlacementPlan:
    """One plan for every layer of a trace, for the ``interval`` steps after ``at``."""

    at: int
    interval: int  # the re-plan interval: training steps the plan is held
    source: str  # the load estimate: forecast, window, oracle (plan); adaptive (watch)
    predictor: str | None
    cluster: Cluster
    slots: int
    layers: list[int]  # the trace's layer numbers
    source_layers: list[int] | None  # the model's layer numbers, where the trace knows them
    shares: np.ndarray  # (L, E) estimated mean shares over the interval
    phy2log: np.ndarray  # (L, R)
    log2phy: np.ndarray  # (L, E, X)
    logcnt: np.ndarray  # (L, E)
    expected: np.ndarray  # (L,) balancedness of this plan under the estimate
    expected_static: np.ndarray  # (L,) ... of the static placement
    fallback: str | None = None

    @classmethod
    def of(cls, layout: Layout, *, at: int, interval: int, source: str,
           predictor: str | None, cluster: Cluster, layers: list[int],
           shares: np.ndarray, expected: np.ndarray, expected_static: np.ndarray,
           source_layers: list[int] | None = None, fallback: str | None = None
           ) -> "PlacementPlan":
        """The plan of ``layout`` (the planner's arrays) with what it was made from."""
        return cls(int(at), int(interval), source, predictor, cluster,
                   int(layout.phy2log.shape[1]), list(layers), source_layers,
                   np.asarray(shares, dtype=np.float64), layout.phy2log, layout.log2phy,
                   layout.logcnt, np.asarray(expected), np.asarray(expected_static),
                   fallback)

    @classmethod
    def merge(cls, parts: list["PlacementPlan"]) -> "PlacementPlan":
        """One plan of every layer from plans of chunks of layers (in layer order);
        ``log2phy`` is padded with -1 to the widest chunk's."""
        if len(parts) == 1:
            return parts[0]
        first = parts[0]
        join = lambda name: np.concatenate([getattr(p, name) for p in parts])  # noqa: E731
        fallback = next((p.fallback for p in parts if p.fallback), None)
        return cls(first.at, first.interval, first.source, first.predictor, first.cluster,
                   first.slots, [x for p in parts for x in p.layers], first.source_layers,
                   join("shares"), join("phy2log"), stack_log2phy([p.log2phy for p in parts]),
                   join("logcnt"), join("expected"), join("expected_static"), fallback)

    def document(self, trace: str, *, plan_version: int | None = None) -> dict[str, Any]:
        """The JSON document of this plan (see :func:`plan_document`)."""
        return plan_document(self, trace, plan_version=plan_version)

    def sglang(self) -> dict[str, Any]:
        """``{"physical_to_logical_map": [...]}`` for SGLang's ``--init-expert-location``
        (moetrace.placement.formats.sglang_map)."""
        from moetrace.placement.formats import sglang_map

        return sglang_map(self.phy2log, self.layers, self.source_layers, self.logcnt.shape[1])

    def vllm_ascend(self) -> dict[str, Any]:
        """The expert map vllm-ascend's static EPLB reads (``expert_map_path``;
        moetrace.placement.formats.vllm_ascend_map)."""
        from moetrace.placement.formats import vllm_ascend_map

        return vllm_ascend_map(self.phy2log, self.cluster.gpus)


def stack_log2phy(parts: list[np.ndarray]) -> np.ndarray:
    """``log2phy`` arrays of chunks of layers as one, padded with -1 to the widest."""
    width = max(p.shape[2] for p in parts)
    return np.concatenate([np.pad(p, ((0, 0), (0, 0), (0, width - p.shape[2])),
                                  constant_values=-1) for p in parts])


def plan_document(plan: PlacementPlan, trace: str, *, plan_version: int | None = None
                  ) -> dict[str, Any]:
    """The ``moetrace.plan`` document of ``plan`` for ``trace`` (a path or a directory
    watched); ``plan_version`` is watch's count of the plans it wrote (None from ``plan``)."""
    c = plan.cluster
    return {
        "schema": SCHEMA, "version": SCHEMA_VERSION, "plan_version": plan_version,
        "trace": str(trace), "at": plan.at, "interval": plan.interval, "source": plan.source,
        "predictor": plan.predictor, "fallback": plan.fallback,
        "cluster": {"gpus": c.gpus, "nodes": c.nodes, "groups": c.groups,
                    "replicas": plan.slots, "rebalance": c.planner},
        "layers": list(plan.layers), "source_layers": plan.source_layers,
        "phy2log": plan.phy2log.tolist(), "log2phy": plan.log2phy.tolist(),
        "logcnt": plan.logcnt.tolist(), "estimated_shares": plan.shares.tolist(),
        "expected": [{"layer": layer, "balancedness": float(b), "static_balancedness": float(s)}
                     for layer, b, s in zip(plan.layers, plan.expected, plan.expected_static)],
    }


@dataclass(frozen=True)
class PlanFile:
    """A plan document read back: the plan, the trace it names, watch's plan version."""

    plan: PlacementPlan
    trace: str
    plan_version: int | None


def read_plan(source: str | Path | dict[str, Any]) -> PlanFile:
    """A ``moetrace.plan`` document (a path to its JSON, or the parsed object) as a
    :class:`PlanFile`; a ParameterError names the file and what does not fit the schema."""
    doc, path = load(source, "a plan document")

    def bad(problem: str) -> ParameterError:
        return ParameterError(f"not a {SCHEMA} version {SCHEMA_VERSION} document: {problem}",
                              path=path)

    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise bad(f"its schema is {doc.get('schema') if isinstance(doc, dict) else None!r}")
    if doc.get("version") != SCHEMA_VERSION:
        raise bad(f"its version is {doc.get('version')!r}")
    missing = [k for k in PLAN_KEYS if "." not in k and k not in doc]
    if missing:
        raise bad(f"no {', '.join(missing)}")
    try:
        c = doc["cluster"]
        cluster = Cluster(gpus=int(c["gpus"]), nodes=int(c["nodes"]), groups=int(c["groups"]),
                          replicas=int(c["replicas"]), planner=str(c["rebalance"]))
        phy2log = np.asarray(doc["phy2log"], dtype=np.int64)
        log2phy = np.asarray(doc["log2phy"], dtype=np.int64)
        logcnt = np.asarray(doc["logcnt"], dtype=np.int64)
        shares = np.asarray(doc["estimated_shares"], dtype=np.float64)
        expected = doc["expected"]
        plan = PlacementPlan(
            int(doc["at"]), int(doc["interval"]), str(doc["source"]), doc["predictor"], cluster,
            cluster.replicas, [int(x) for x in doc["layers"]], doc["source_layers"], shares,
            phy2log, log2phy, logcnt,
            np.array([float(e["balancedness"]) for e in expected]),
            np.array([float(e["static_balancedness"]) for e in expected]), doc["fallback"])
    except (KeyError, TypeError, ValueError) as exc:
        raise bad(f"{type(exc).__name__}: {exc}") from None
    layers, experts = len(plan.layers), logcnt.shape[-1] if logcnt.ndim == 2 else -1
    if (phy2log.shape != (layers, cluster.replicas) or logcnt.shape != (layers, experts)
            or shares.shape != (layers, experts) or log2phy.ndim != 3
            or log2phy.shape[:2] != (layers, experts) or len(expected) != layers):
        raise bad(f"array shapes do not fit {layers} layers and {cluster.replicas} slots")
    if ((phy2log < 0) | (phy2log >= experts)).any():
        raise bad("phy2log names an expert the layers do not have")
    counted = np.zeros_like(logcnt)
    np.add.at(counted, (np.arange(layers)[:, None], phy2log), 1)
    if (counted != logcnt).any():
        raise bad("phy2log and logcnt disagree")
    version = doc["plan_version"]
    return PlanFile(plan, str(doc["trace"]), None if version is None else int(version))
