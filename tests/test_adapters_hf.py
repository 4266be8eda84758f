"""HF transformers adapter against real tiny randomly initialised MoE models (no download).

Each model trains two optimizer steps of two micro-batches each (gradient accumulation);
the recorded counts must equal the routing recomputed from the router logits the model
itself returns with ``output_router_logits=True`` (top-k, or DeepSeek-V3's group-limited
choice), summed per step.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

from moetrace.record import TraceRecorder, attach  # noqa: E402
from moetrace.trace import read_trace  # noqa: E402
from routing import id_counts  # noqa: E402

VOCAB, N_EXPERTS, TOP_K = 64, 8, 2
_COMMON = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, num_experts_per_tok=TOP_K, max_position_embeddings=64)

CONFIGS = {
    "mixtral": lambda: transformers.MixtralConfig(**_COMMON, intermediate_size=32,
                                                  num_local_experts=N_EXPERTS),
    "qwen2_moe": lambda: transformers.Qwen2MoeConfig(
        **_COMMON, intermediate_size=32, moe_intermediate_size=16, num_experts=N_EXPERTS,
        shared_expert_intermediate_size=16),
    "qwen3_moe": lambda: transformers.Qwen3MoeConfig(
        **_COMMON, intermediate_size=32, moe_intermediate_size=16, num_experts=N_EXPERTS,
        head_dim=8),
    "olmoe": lambda: transformers.OlmoeConfig(**_COMMON, intermediate_size=32,
                                              num_experts=N_EXPERTS),
    # group-limited routing: 2 groups of 4 experts, each token picks from its best group only
    "deepseek_v3": lambda: transformers.DeepseekV3Config(
        **_COMMON, intermediate_size=32, moe_intermediate_size=16, n_routed_experts=N_EXPERTS,
        n_group=2, topk_group=1, first_k_dense_replace=0, n_shared_experts=1,
        kv_lora_rank=16, q_lora_rank=None, qk_rope_head_dim=4, qk_nope_head_dim=4,
        v_head_dim=8),
}


def _routed(name: str, logits: torch.Tensor) -> torch.Tensor:
    """The experts each token goes to, computed here from the router logits the model returns."""
    if name != "deepseek_v3":
        return torch.topk(logits, TOP_K, dim=-1).indices
    scores = logits.sigmoid().view(-1, 2, N_EXPERTS // 2)  # bias is zero at initialisation
    best_group = scores.topk(2, dim=-1).values.sum(dim=-1).argmax(dim=-1)
    in_group = torch.topk(scores[torch.arange(len(scores)), best_group], TOP_K, dim=-1).indices
    return in_group + best_group[:, None] * (N_EXPERTS // 2)


def _train(model, rec_dir, *, steps=2, micro_batches=2, flush_every=1, name="mixtral"):
    """Train with gradient accumulation; return the expected counts[layer, step, expert]."""
    rec = TraceRecorder(rec_dir, flush_every=flush_every)
    handle = attach(model, rec)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    n_layers = len(handle.layers)
    expected = np.zeros((n_layers, steps, N_EXPERTS), dtype=np.int64)
    gen = torch.Generator().manual_seed(1)
    for step in range(steps):
        for _ in range(micro_batches):
            ids = torch.randint(0, VOCAB, (2, 6), generator=gen)
            out = model(ids, labels=ids, output_router_logits=True)
            (out.loss / micro_batches).backward()
            for layer, logits in enumerate(out.router_logits):
                expected[layer, step] += id_counts(_routed(name, logits.detach().float()),
                                                   N_EXPERTS)
        opt.step()
        opt.zero_grad()
    rec.close()
    handle.remove()
    return handle, expected


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_counts_match_the_models_own_routing(tmp_path, name):
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(CONFIGS[name]())
    model.train()
    handle, expected = _train(model, tmp_path / "t", name=name)
    assert [x.kind for x in handle.layers] == ["hf", "hf"]
    # counted where the block hands each token's experts to its experts module
    assert all(x.name.endswith(".experts") for x in handle.layers)
    trace = read_trace(tmp_path / "t")
    assert trace.steps.tolist() == [0, 1]
    np.testing.assert_array_equal(trace.loads().counts, expected)
    assert expected.sum(axis=2).tolist() == [[2 * 2 * 6 * TOP_K] * 2] * 2  # 2 batches x 12 x k
    meta = trace.metadata
    assert (meta.model, meta.top_k, meta.n_experts, meta.source) == (
        type(model).__name__, TOP_K, N_EXPERTS, "recorded")
    assert meta.tokens_per_step == 24  # layer 0 slots of the first step / top_k


@pytest.mark.parametrize("use_reentrant", [True, False])
def test_gradient_checkpointing_counts_each_token_once(tmp_path, use_reentrant):
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(CONFIGS["mixtral"]())
    enable = getattr(model, "activation_checkpointing_enable", None)
    if enable is not None:
        enable(activation_checkpointing_kwargs={"use_reentrant": use_reentrant})
    else:  # transformers before the rename
        model.gradient_checkpointing_enable(
            gradient_checkpointing_kwargs={"use_reentrant": use_reentrant})
    model.train()
    router = model.model.layers[0].mlp.gate
    calls = []
    counter = router.register_forward_hook(lambda *_: calls.append(1))
    _, expected = _train(model, tmp_path / "t", steps=1, micro_batches=1)
    counter.remove()
    assert len(calls) == 2  # the router ran again when its layer was recomputed in backward
    np.testing.assert_array_equal(read_trace(tmp_path / "t").loads().counts, expected)


def test_switch_transformers_dispatch_masks_are_counted(tmp_path):
    """An encoder-decoder whose top-1 routers return one-hot dispatch masks, not ids."""
    cfg = transformers.SwitchTransformersConfig(
        vocab_size=VOCAB, d_model=16, d_ff=32, d_kv=4, num_heads=2, num_layers=2,
        num_decoder_layers=2, num_sparse_encoder_layers=1, num_sparse_decoder_layers=1,
        num_experts=N_EXPERTS, expert_capacity=64, decoder_start_token_id=0, pad_token_id=0)
    torch.manual_seed(0)
    model = transformers.SwitchTransformersForConditionalGeneration(cfg)
    rec = TraceRecorder(tmp_path / "t")
    handle = attach(model, rec)
    assert [x.name for x in handle.layers] == ["encoder.block.1.layer.1.mlp.router",
                                               "decoder.block.1.layer.2.mlp.router"]
    ids = torch.randint(1, VOCAB, (2, 5))
    out = model(input_ids=ids, labels=ids, output_router_logits=True)
    out.loss.backward()
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    rec.close()
    handle.remove()
    expected = [id_counts(logits.detach().argmax(-1), N_EXPERTS)
                for logits in (*out.encoder_router_logits, *out.decoder_router_logits)]
    counts = read_trace(tmp_path / "t").loads().counts[:, 0]
    assert counts.tolist() == [e.tolist() for e in expected]  # capacity 64: nothing dropped
    assert counts.sum(axis=1).tolist() == [10, 10]
