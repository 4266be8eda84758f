"""Every MoE router class the installed transformers ships, recorded for real, or skipped
cleanly: a new transformers release cannot silently break a user's training run.

For each ``*Router`` class found in transformers' modeling modules (found at test time, so a
new release's routers are in the sweep), the router is built from its own model family's
config (made tiny), wrapped as the MoE layer of a small model, attached with ``attach()``
and trained one forward/backward/optimizer step with recording. Then either its counts are
exact (every token's top-k choices, the ids the router itself returned, or the top-k of the
logits it returned) or the adapter left it alone (not a router: no expert count) or skipped
it with a warning; training never raised. Routers whose forward needs arguments only their
own block supplies (a bias tensor, the token ids) are exercised through their whole block
elsewhere or listed in the test's output; they are counted in the summary.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
import warnings

import numpy as np
import pytest
import torch
from torch import nn

transformers = pytest.importorskip("transformers")

from moetrace.record import TraceRecorder, attach  # noqa: E402
from moetrace.record.adapters import hf  # noqa: E402
from moetrace.trace import read_trace  # noqa: E402

TOKENS = 12
TINY = dict(hidden_size=32, intermediate_size=32, moe_intermediate_size=16, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, head_dim=8, vocab_size=64,
            num_experts=8, num_local_experts=8, n_routed_experts=8, moe_num_experts=8,
            num_experts_per_tok=2, top_k=2, moe_k=2, moe_top_k=2, n_group=2, topk_group=1,
            d_model=32, expert_capacity=64)


def router_classes() -> list[tuple[str, str]]:
    """(family, class name) of every router class in the installed transformers."""
    from transformers import models

    found = []
    for info in pkgutil.iter_modules(models.__path__):
        spec = importlib.util.find_spec(f"transformers.models.{info.name}")
        if spec is None or spec.submodule_search_locations is None:
            continue
        source = next(iter(spec.submodule_search_locations)) + f"/modeling_{info.name}.py"
        try:
            text = open(source).read()
        except OSError:
            continue
        for name in re.findall(r"^class (\w+Router)\(", text, re.M):
            found.append((info.name, name))
    return sorted(found)


ROUTERS = router_classes()


def _configs(family: str) -> list:
    module = importlib.import_module(f"transformers.models.{family}.configuration_{family}")
    found = [obj for obj in vars(module).values() if inspect.isclass(obj)
             and issubclass(obj, transformers.PretrainedConfig) and obj.__module__ == module.__name__]
    return sorted(found, key=lambda c: "Text" not in c.__name__)  # text configs first


def _tiny(config_class):
    config = config_class()
    for key, value in TINY.items():
        if hasattr(config, key):
            try:
                setattr(config, key, value)
            except Exception:  # noqa: BLE001 - a read-only property: keep the default
                pass
    return config


def build(family: str, name: str) -> tuple[nn.Module, int] | None:
    """The router built from its family's tiny config and the hidden size, or None if it
    cannot run on hidden states alone."""
    cls = getattr(importlib.import_module(f"transformers.models.{family}.modeling_{family}"),
                  name)
    for config_class in _configs(family):
        try:
            config = _tiny(config_class)
            torch.manual_seed(0)
            router = cls(config)
            hidden = getattr(config, "hidden_size", None) or getattr(config, "d_model", None)
            router(torch.randn(TOKENS, hidden))  # runs on hidden states alone?
            return router, hidden
        except Exception:  # noqa: BLE001 - try the family's next config
            continue
    return None


class Block(nn.Module):
    """A minimal MoE layer around the router: its output feeds the loss, as in training."""

    def __init__(self, router: nn.Module, hidden: int):
        super().__init__()
        self.router = router
        self.proj = nn.Linear(hidden, hidden)
        self.seen: list = []

    def forward(self, x):
        out = self.router(x)
        self.seen.append(out)
        items = out if isinstance(out, (tuple, list)) else (out,)
        total = sum(t.float().sum() for t in items if isinstance(t, torch.Tensor)
                    and t.is_floating_point())
        return self.proj(x).sum() + total


def expected_counts(router: nn.Module, output) -> np.ndarray | None:
    """Counts computed here from what the router returned (ids, a one-hot mask, or the top-k
    of its logits), independently of the adapter."""
    n = hf._n_experts(router)
    items = output if isinstance(output, (tuple, list)) else (output,)
    ints = [t for t in items if isinstance(t, torch.Tensor) and not t.is_floating_point()
            and t.dtype != torch.bool]
    k = getattr(router, "top_k", None)
    if ints:
        ids = ints[0]
        if ids.dim() >= 2 and ids.shape[-1] == n and k != n:
            return ids.reshape(-1, n).sum(0).numpy()
        ids = ids.reshape(-1)
        return np.bincount(ids[(ids >= 0) & (ids < n)].numpy(), minlength=n)
    floats = [t for t in items if isinstance(t, torch.Tensor) and t.shape[-1] == n]
    if floats and isinstance(k, int):
        return np.bincount(torch.topk(floats[-1].detach(), k, -1).indices.reshape(-1).numpy(),
                           minlength=n)
    return None


@pytest.mark.slow
def test_every_router_class_records_exactly_or_is_skipped_cleanly(tmp_path):
    assert len(ROUTERS) >= 10, "the sweep found almost no routers: the discovery is broken"
    outcome: dict[str, list[str]] = {"counted": [], "not a router": [], "skipped": [],
                                     "needs its block": []}
    for i, (family, name) in enumerate(ROUTERS):
        built = build(family, name)
        if built is None:
            outcome["needs its block"].append(name)
            continue
        router, hidden = built
        block = Block(router, hidden)
        model = nn.ModuleList([block])
        rec = TraceRecorder(tmp_path / f"t{i}", flush_every=1)
        if hf.match(router) is None:
            outcome["not a router"].append(name)
            continue
        handle = attach(model, rec)
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            loss = block(torch.randn(TOKENS, hidden))
            loss.backward()  # training goes on whatever the recorder makes of the router
            opt.step()
        handle.remove()
        rec.close()
        if rec.skipped_layers:
            assert any("not recording MoE layer 0" in str(w.message) for w in caught), name
            outcome["skipped"].append(name)
            continue
        want = expected_counts(router, block.seen[0])
        got = read_trace(tmp_path / f"t{i}").loads().counts[0, 0]
        assert want is not None, f"{name}: counted, but not from ids or known top-k logits"
        np.testing.assert_array_equal(got, want, err_msg=name)
        assert got.sum() > 0
        outcome["counted"].append(name)
    summary = {k: len(v) for k, v in outcome.items()}
    print(f"\n{len(ROUTERS)} router classes in transformers {transformers.__version__}: "
          f"{summary}; needing their block: {outcome['needs its block']}; skipped: "
          f"{outcome['skipped']}; not routers: {outcome['not a router']}")
    assert len(outcome["counted"]) >= 0.6 * len(ROUTERS), summary


def test_dbrx_records_through_its_experts_call_and_trains_on(tmp_path):
    """The reproduction: attach() on a real DbrxFFN used to raise AttributeError ('no weight')
    inside the first forward. DBRX's router returns logits only; the block hands the chosen
    experts to its experts module, and that is what is counted."""
    from transformers.models.dbrx.configuration_dbrx import DbrxFFNConfig
    from transformers.models.dbrx.modeling_dbrx import DbrxFFN

    config = transformers.DbrxConfig(d_model=32, n_heads=4, n_layers=2, vocab_size=64,
                                     ffn_config=DbrxFFNConfig(ffn_hidden_size=32, moe_num_experts=8,
                                                              moe_top_k=2))
    torch.manual_seed(0)
    ffn = DbrxFFN(config)
    model = nn.ModuleList([ffn])
    rec = TraceRecorder(tmp_path / "t", flush_every=1)
    handle = attach(model, rec)
    assert [(x.name, x.kind) for x in handle.layers] == [("0.experts", "hf")]
    x = torch.randn(2, 6, 32)
    logits = ffn.router(x.reshape(-1, 32))
    want = np.bincount(torch.topk(logits.softmax(-1), 2, -1).indices.reshape(-1).numpy(),
                       minlength=8)
    out = ffn(x)
    out.sum().backward()
    torch.optim.SGD(model.parameters(), lr=0.01).step()
    rec.close()
    trace = read_trace(tmp_path / "t")
    np.testing.assert_array_equal(trace.loads().counts[0, 0], want)
    assert trace.metadata.top_k == 2


def test_llama4_router_returning_scores_and_logits_is_counted(tmp_path):
    from transformers.models.llama4.configuration_llama4 import Llama4TextConfig
    from transformers.models.llama4.modeling_llama4 import Llama4TextMoe

    config = Llama4TextConfig(hidden_size=32, intermediate_size=32, num_local_experts=8,
                              num_experts_per_tok=1, vocab_size=64)
    torch.manual_seed(0)
    moe = Llama4TextMoe(config)
    model = nn.ModuleList([moe])
    rec = TraceRecorder(tmp_path / "t", flush_every=1)
    handle = attach(model, rec)
    assert [x.name for x in handle.layers] == ["0.router"]
    x = torch.randn(12, 32)
    with torch.no_grad():  # the test's own look at the logits is no training forward
        want = np.bincount(torch.topk(moe.router(x)[1], 1, -1).indices.reshape(-1).numpy(),
                           minlength=8)
    out, _ = moe(x)
    out.sum().backward()
    torch.optim.SGD(model.parameters(), lr=0.01).step()
    rec.close()
    np.testing.assert_array_equal(read_trace(tmp_path / "t").loads().counts[0, 0], want)


def test_a_name_alike_that_holds_no_experts_is_not_hooked():
    class GraniteDoclingDensityRouter(nn.Module):  # the real one's shape: no expert count
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(8, 1)

        def forward(self, x):
            return self.fc(x)

    GraniteDoclingDensityRouter.__module__ = "transformers.models.granite_docling.modeling_x"
    assert hf.match(GraniteDoclingDensityRouter()) is None
