"""Megatron-core adapter against the real ``TopKRouter`` on CPU (single-process gloo group).

Megatron-core installs and runs here, but ``Router.gating`` moves its weight to
``torch.cuda.current_device()`` unconditionally (megatron/core/transformer/moe/router.py),
which a CPU build cannot do. The test subclasses ``TopKRouter`` and overrides only
``gating`` with the same linear on CPU; routing, the aux loss and the
``(probs, routing_map)`` output are Megatron's own. The adapter matches the subclass through
its MRO, as it would a user's subclass.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

router_module = pytest.importorskip("megatron.core.transformer.moe.router")

from dist_group import single_process_group  # noqa: E402
from routing import topk_counts  # noqa: E402
from moetrace.record import TraceRecorder, attach  # noqa: E402
from moetrace.trace import read_trace  # noqa: E402

HIDDEN, N_EXPERTS, TOP_K = 16, 4, 2


class CpuTopKRouter(router_module.TopKRouter):
    """Megatron's TopKRouter with its gate linear kept on the CPU."""

    def gating(self, input: torch.Tensor) -> torch.Tensor:
        return F.linear(input.float(), self.weight)


def _routers() -> nn.ModuleList:
    from megatron.core import parallel_state
    from megatron.core.process_groups_config import ProcessGroupCollection
    from megatron.core.transformer import TransformerConfig

    single_process_group()
    if not parallel_state.model_parallel_is_initialized():
        parallel_state.initialize_model_parallel(1, 1)
    config = TransformerConfig(num_layers=2, hidden_size=HIDDEN, num_attention_heads=2,
                               num_moe_experts=N_EXPERTS, moe_router_topk=TOP_K,
                               moe_aux_loss_coeff=0.01, use_cpu_initialization=True,
                               moe_router_load_balancing_type="aux_loss")
    routers = nn.ModuleList()
    for number in (1, 2):
        router = CpuTopKRouter(config=config,
                               pg_collection=ProcessGroupCollection.use_mpu_process_groups())
        router.set_layer_number(number)
        nn.init.normal_(router.weight, std=0.5)
        routers.append(router)
    return routers


def test_routing_map_counts_match_the_router_logits(tmp_path):
    torch.manual_seed(0)
    routers = _routers()
    rec = TraceRecorder(tmp_path / "t")
    handle = attach(routers, rec)
    assert [(x.kind, x.layer) for x in handle.layers] == [("megatron", 0), ("megatron", 1)]
    opt = torch.optim.SGD(routers.parameters(), lr=0.1)
    expected = np.zeros((2, 2, N_EXPERTS), dtype=np.int64)
    for step in range(2):
        for _ in range(2):  # micro-batches
            x = torch.randn(5, 3, HIDDEN)  # [sequence, batch, hidden]
            loss = 0.0
            for layer, router in enumerate(routers):
                probs, routing_map = router(x)
                assert routing_map.dtype == torch.bool
                loss = loss + probs.pow(2).sum()
                logits = x.reshape(-1, HIDDEN) @ router.weight.detach().T
                expected[layer, step] += topk_counts(logits, TOP_K, N_EXPERTS)
            loss.backward()
        opt.step()
        opt.zero_grad()
    rec.close()
    handle.remove()
    trace = read_trace(tmp_path / "t")
    np.testing.assert_array_equal(trace.loads().counts, expected)
    assert expected.sum(axis=2).tolist() == [[2 * 15 * TOP_K] * 2] * 2
    assert trace.metadata.top_k == TOP_K
