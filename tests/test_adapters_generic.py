"""User-named MoE modules, the registry's matching rules, and HF routers that return logits only."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from moetrace.record import TraceRecorder, attach, from_counts, from_indices
from moetrace.record.adapters import reader_for
from moetrace.trace import read_trace


class CountingGate(nn.Module):
    """A user's gate whose forward returns (combine weights, per-expert counts)."""

    def __init__(self, n_experts: int = 3):
        super().__init__()
        self.proj = nn.Linear(4, n_experts)

    def forward(self, x):
        logits = self.proj(x)
        ids = logits.argmax(dim=-1)
        return logits.softmax(-1), torch.bincount(ids, minlength=logits.shape[-1])


class LogitsOnlyRouter(nn.Module):
    """Like an HF router that returns logits only: counted from their top-k."""

    top_k = 2

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(5, 4))

    def forward(self, x):
        return x @ self.weight.T


LogitsOnlyRouter.__module__ = "transformers.models.toy.modeling_toy"
LogitsOnlyRouter.__name__ = "ToyTopKRouter"


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.gate = CountingGate()
        self.router = LogitsOnlyRouter()


def test_user_counts_reader_by_qualified_name_and_hf_logits_fallback(tmp_path):
    torch.manual_seed(0)
    model = nn.ModuleList([Block(), Block()])
    rec = TraceRecorder(tmp_path / "t")
    qualified = f"{CountingGate.__module__}.{CountingGate.__qualname__}"
    handle = attach(model, rec, modules={qualified: from_counts(lambda m, i, o: o[1])})
    assert [(x.layer, x.name, x.kind) for x in handle.layers] == [
        (0, "0.gate", "user"), (1, "0.router", "hf"), (2, "1.gate", "user"),
        (3, "1.router", "hf")]
    x = torch.randn(7, 4)
    expected = []
    with torch.enable_grad():
        for block in model:
            expected.append(block.gate(x)[1].numpy())
            logits = block.router(x)
            expected.append(np.bincount(torch.topk(logits, 2).indices.reshape(-1).numpy(),
                                        minlength=5))
    rec.close()
    handle.remove()
    counts = read_trace(tmp_path / "t").loads().counts[:, 0]
    assert counts[0, :3].tolist() == expected[0].tolist()
    assert counts[1].tolist() == expected[1].tolist()
    assert counts[3].tolist() == expected[3].tolist()
    assert counts[:, :].sum(axis=1).tolist() == [7, 14, 7, 14]


def test_a_user_named_block_hides_the_routers_inside_it(tmp_path):
    block = Block()
    modules = {Block: from_indices(lambda m, i, o: o, n_experts=5)}
    assert reader_for(block, modules)[0] == "user"
    assert reader_for(block.router)[0] == "hf"
    assert reader_for(block.gate) is None
    handle = attach(nn.Sequential(block), TraceRecorder(tmp_path / "t"), modules=modules)
    handle.remove()
    assert [(x.name, x.kind) for x in handle.layers] == [("0", "user")]
