"""A small byte-level MoE GPT: real top-k routing with a Switch-style load-balancing loss.

Small enough to train thousands of steps on two CPU cores, real enough that its expert loads
move the way a large model's do (a transient while the router learns, then a stable state).
The router is its own module (:class:`TopKRouter`) returning the chosen expert ids, so the
recorder attaches to it exactly as it would to a user's model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class DemoConfig:
    """Shape of the demo model and of one training step (batch x seq_len byte tokens)."""

    n_layers: int = 4  # every transformer layer has an MoE feed-forward
    n_experts: int = 8
    top_k: int = 2
    d_model: int = 48
    n_heads: int = 4
    d_expert: int = 96
    seq_len: int = 64
    batch_size: int = 8
    vocab_size: int = 256  # bytes
    aux_loss_coef: float = 0.01

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len


class TopKRouter(nn.Module):
    """Linear gate over experts; returns (combine weights, expert ids, router probabilities)."""

    def __init__(self, d_model: int, n_experts: int, top_k: int):
        super().__init__()
        self.n_experts, self.top_k = n_experts, top_k
        self.gate = nn.Linear(d_model, n_experts, bias=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        probs = self.gate(x).softmax(dim=-1)  # (N, E)
        weights, ids = probs.topk(self.top_k, dim=-1)  # (N, k) each
        weights = weights / weights.sum(dim=-1, keepdim=True)
        return weights, ids, probs


def switch_aux_loss(probs: torch.Tensor, ids: torch.Tensor, n_experts: int) -> torch.Tensor:
    """Switch Transformer balance loss E * sum_e f_e * P_e (1.0 when perfectly balanced).

    f_e is the fraction of routed (token, slot) pairs sent to expert e, P_e the mean router
    probability of e; only P_e carries gradient, as in the paper.
    """
    frac = torch.bincount(ids.reshape(-1), minlength=n_experts).to(probs.dtype) / ids.numel()
    return n_experts * torch.sum(frac * probs.mean(dim=0))


class MoEFeedForward(nn.Module):
    """Dropless top-k MoE: tokens sorted by expert, one small MLP per expert, weighted sum back."""

    def __init__(self, cfg: DemoConfig):
        super().__init__()
        self.n_experts = cfg.n_experts
        self.router = TopKRouter(cfg.d_model, cfg.n_experts, cfg.top_k)
        scale_in, scale_out = cfg.d_model ** -0.5, cfg.d_expert ** -0.5
        self.w_in = nn.Parameter(torch.randn(cfg.n_experts, cfg.d_model, cfg.d_expert) * scale_in)
        self.w_out = nn.Parameter(torch.randn(cfg.n_experts, cfg.d_expert, cfg.d_model)
                                  * scale_out)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        weights, ids, probs = self.router(x)
        k = ids.shape[1]
        flat_ids = ids.reshape(-1)
        order = flat_ids.argsort(stable=True)
        token_of = order // k  # source token of each sorted (token, slot) pair
        sizes = torch.bincount(flat_ids, minlength=self.n_experts).tolist()
        outs = []
        for e, chunk in enumerate(x[token_of].split(sizes)):
            if chunk.shape[0]:
                outs.append(F.relu(chunk @ self.w_in[e]) @ self.w_out[e])
        expert_out = torch.cat(outs) * weights.reshape(-1)[order, None]
        y = torch.zeros_like(x).index_add_(0, token_of, expert_out)
        return y.reshape(shape), switch_aux_loss(probs, ids, self.n_experts)


class Block(nn.Module):
    """Pre-norm transformer layer: causal self-attention, then the MoE feed-forward."""

    def __init__(self, cfg: DemoConfig):
        super().__init__()
        self.n_heads = cfg.n_heads
        self.ln1, self.ln2 = nn.LayerNorm(cfg.d_model), nn.LayerNorm(cfg.d_model)
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.moe = MoEFeedForward(cfg)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, self.n_heads, d // self.n_heads).unbind(2)
        att = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                             v.transpose(1, 2), is_causal=True)
        x = x + self.proj(att.transpose(1, 2).reshape(b, t, d))
        y, aux = self.moe(self.ln2(x))
        return x + y, aux


class DemoMoEGPT(nn.Module):
    """Byte-level GPT whose every layer routes its feed-forward through top-k experts."""

    def __init__(self, cfg: DemoConfig):
        super().__init__()
        self.cfg = cfg
        self.tok = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos = nn.Parameter(torch.zeros(cfg.seq_len, cfg.d_model))
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        nn.init.normal_(self.tok.weight, std=0.02)

    def forward(self, tokens: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor,
                                                                          torch.Tensor]:
        """Mean next-byte cross-entropy and the mean balance loss over MoE layers."""
        x = self.tok(tokens) + self.pos[: tokens.shape[1]]
        aux = x.new_zeros(())
        for block in self.blocks:
            x, layer_aux = block(x)
            aux = aux + layer_aux
        logits = self.ln_f(x) @ self.tok.weight.T  # tied input/output embedding
        lm = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
        return lm, aux / len(self.blocks)
