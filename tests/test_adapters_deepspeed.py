"""DeepSpeed adapter against the real ``deepspeed.moe.layer.MoE`` on CPU (single-process gloo).

Counts read from ``TopKGate``'s ``exp_counts`` must equal the top-k of the gate logits,
computed here from the gate's own weight and the inputs it saw.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

deepspeed_layer = pytest.importorskip("deepspeed.moe.layer")

from moetrace.record import TraceRecorder, attach  # noqa: E402
from moetrace.trace import read_trace  # noqa: E402
from dist_group import single_process_group  # noqa: E402
from routing import topk_counts  # noqa: E402

DIM, N_EXPERTS = 16, 4


class TinyMoENet(nn.Module):
    """Two DeepSpeed MoE layers with a projection between them and a load-balancing loss."""

    def __init__(self, k: int):
        super().__init__()
        self.moe = nn.ModuleList(
            deepspeed_layer.MoE(hidden_size=DIM, expert=nn.Linear(DIM, DIM), num_experts=N_EXPERTS,
                                k=k, top2_2nd_expert_sampling=False, use_rts=False)
            for _ in range(2))
        self.mid = nn.Linear(DIM, DIM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, aux0, _ = self.moe[0](x)
        h, aux1, _ = self.moe[1](torch.tanh(self.mid(h)))
        return h.pow(2).mean() + 0.01 * (aux0 + aux1)


@pytest.mark.parametrize("k", [1, 2])
def test_exp_counts_match_the_gate_logits(tmp_path, k):
    single_process_group()
    torch.manual_seed(0)
    net = TinyMoENet(k)
    seen: list[list[torch.Tensor]] = [[], []]
    for i, layer in enumerate(net.moe):
        gate = layer.deepspeed_moe.gate
        gate.register_forward_pre_hook(lambda m, args, i=i: seen[i].append(args[0].detach()))
    rec = TraceRecorder(tmp_path / "t")
    handle = attach(net, rec)
    assert [(x.kind, x.module_class) for x in handle.layers] == [("deepspeed", "TopKGate")] * 2
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    expected = np.zeros((2, 2, N_EXPERTS), dtype=np.int64)
    for step in range(2):
        for _ in range(2):  # micro-batches of one step
            net(torch.randn(3, 5, DIM)).backward()
            for layer, moe in enumerate(net.moe):
                weight = moe.deepspeed_moe.gate.wg.weight.detach()
                logits = seen[layer][-1].reshape(-1, DIM).float() @ weight.T
                expected[layer, step] += topk_counts(logits, k, N_EXPERTS)
        opt.step()
        opt.zero_grad()
    rec.close()
    handle.remove()
    trace = read_trace(tmp_path / "t")
    np.testing.assert_array_equal(trace.loads().counts, expected)
    assert expected[:, :, :].sum(axis=2).tolist() == [[2 * 15 * k] * 2] * 2
    assert trace.metadata.top_k == k
