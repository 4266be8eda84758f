"""torchtitan adapter against faithful stand-ins of its router (torchtitan cannot run here).

torchtitan 0.3 installs, but importing its MoE module pulls its whole trainer stack
(``spmd_types``, ``tyro``, ``wandb``, ``tensorboard``, ``datasets``, ``torchdata``) into the
test environment. So these stand-ins reproduce ``TokenChoiceTopKRouter.forward`` from the
public sources, under the module names the adapter matches:

* ``torchtitan/models/common/moe.py`` (0.3): input ``(B, L, D)``, returns
  ``(topk_scores_BLK, topk_expert_ids_BLK, scores_BLE)``;
* ``torchtitan/models/moe/moe.py`` (earlier): input ``(B*L, D)``, returns
  ``(top_scores, selected_experts_indices, num_tokens_per_expert)`` (a float histc).

Routing uses ``expert_bias`` as torchtitan does, and the MoE keeps the float32
``tokens_per_expert`` buffer, which counts twice under activation checkpointing.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from moetrace.record import TraceRecorder, attach
from moetrace.trace import read_trace
from routing import topk_counts

DIM, N_EXPERTS, TOP_K = 8, 4, 2


class _Router(nn.Module):
    def __init__(self):
        super().__init__()
        self.gate = nn.Linear(DIM, N_EXPERTS, bias=False)
        self.num_experts = N_EXPERTS
        self.top_k = TOP_K

    def _choose(self, x, expert_bias):
        scores = torch.sigmoid(self.gate(x).to(torch.float32))
        _, ids = torch.topk(scores + expert_bias, k=self.top_k, dim=-1)
        return scores.gather(dim=-1, index=ids), ids, scores


class RouterV03(_Router):
    def forward(self, x_BLD, expert_bias_E):
        topk_scores_BLK, topk_expert_ids_BLK, scores_BLE = self._choose(x_BLD, expert_bias_E)
        return topk_scores_BLK, topk_expert_ids_BLK, scores_BLE


class RouterOld(_Router):
    def forward(self, x, expert_bias):
        top_scores, selected_experts_indices, _ = self._choose(x, expert_bias)
        # torchtitan histc's the int64 ids (a CUDA kernel); the CPU kernel needs floats
        num_tokens_per_expert = torch.histc(selected_experts_indices.view(-1).float(),
                                            bins=self.num_experts, min=0, max=self.num_experts)
        return top_scores, selected_experts_indices, num_tokens_per_expert


RouterV03.__module__, RouterV03.__name__ = "torchtitan.models.common.moe", "TokenChoiceTopKRouter"
RouterOld.__module__, RouterOld.__name__ = "torchtitan.models.moe.moe", "TokenChoiceTopKRouter"


class MoE(nn.Module):
    def __init__(self, router_cls):
        super().__init__()
        self.router = router_cls()
        self.experts = nn.ModuleList(nn.Linear(DIM, DIM) for _ in range(N_EXPERTS))
        self.register_buffer("expert_bias", torch.tensor([0.3, 0.0, -0.2, 0.1]))
        self.register_buffer("tokens_per_expert", torch.zeros(N_EXPERTS))

    def forward(self, x_BLD):
        flat = x_BLD.reshape(-1, DIM)
        router_in = x_BLD if isinstance(self.router, RouterV03) else flat
        scores, ids, _ = self.router(router_in, self.expert_bias)
        scores, ids = scores.reshape(-1, TOP_K), ids.reshape(-1, TOP_K)
        with torch.no_grad():
            self.tokens_per_expert.add_(torch.bincount(ids.reshape(-1), minlength=N_EXPERTS))
        out = torch.zeros_like(flat)
        for e, expert in enumerate(self.experts):
            token, slot = torch.nonzero(ids == e, as_tuple=True)
            out = out.index_add(0, token, expert(flat[token]) * scores[token, slot, None])
        return out.reshape(x_BLD.shape)


@pytest.mark.parametrize("router_cls", [RouterV03, RouterOld])
def test_router_ids_counted_once_even_under_checkpointing(tmp_path, router_cls):
    torch.manual_seed(0)
    moe = MoE(router_cls)
    rec = TraceRecorder(tmp_path / "t")
    handle = attach(moe, rec)
    assert [(x.kind, x.name) for x in handle.layers] == [("torchtitan", "router")]
    opt = torch.optim.SGD(moe.parameters(), lr=0.1)
    x = torch.randn(2, 5, DIM, requires_grad=True)
    checkpoint(moe, x, use_reentrant=False).pow(2).sum().backward()
    scores = torch.sigmoid(x.detach().reshape(-1, DIM) @ moe.router.gate.weight.detach().T)
    expected = topk_counts(scores + moe.expert_bias, TOP_K, N_EXPERTS)
    opt.step()
    rec.close()
    handle.remove()
    assert read_trace(tmp_path / "t").loads().counts[0, 0].tolist() == expected.tolist()
    assert moe.tokens_per_expert.tolist() == (2 * expected).tolist()  # torchtitan's double count
