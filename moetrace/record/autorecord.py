"""Recording inside a process started by `moetrace record -- CMD`, without touching its code.

A global forward pre-hook sees each model the first time it runs (the outermost module's
pre-hook fires before its children's), attaches the adapters to the MoE layers under it,
and marks its whole subtree as seen so later calls cost one set lookup. Steps end at the
global optimizer step hook; the recorder closes at interpreter exit. Settings come from
the environment that :mod:`moetrace.record.launch` sets.
"""

from __future__ import annotations

import atexit
import os
import warnings
import weakref
from typing import Any

from torch import nn
from torch.nn.modules.module import register_module_forward_pre_hook

from moetrace.errors import MoetraceError, first_line
from moetrace.record.adapters import describe_model, find_moe_modules, hook_layer, step_hook
from moetrace.record.recorder import TraceRecorder

ENV_DIR = "MOETRACE_RECORD_DIR"
ENV_FLUSH_EVERY = "MOETRACE_RECORD_FLUSH_EVERY"
ENV_COUNT_EVAL = "MOETRACE_RECORD_COUNT_EVAL"
ENV_EVERY = "MOETRACE_RECORD_EVERY"


class AutoRecorder:
    """Hooks MoE layers of every model this process runs into one lazily made recorder."""

    def __init__(self, out_dir: str, flush_every: int, count_eval: bool, every: int = 1):
        self.out_dir = out_dir
        self.flush_every = flush_every
        self.count_eval = count_eval
        self.every = every
        self.recorder: TraceRecorder | None = None  # made at the first MoE layer found
        self.disabled = False
        self.layers = 0
        self._seen: weakref.WeakSet[nn.Module] = weakref.WeakSet()
        self._hooks: list[Any] = []

    def _recorder(self) -> TraceRecorder | None:
        """The recorder, made on first use; None (and a warning) if this process cannot record,
        e.g. a second process of the same rank finding that rank's parts already there."""
        if self.recorder is None and not self.disabled:
            try:
                self.recorder = TraceRecorder(self.out_dir, flush_every=self.flush_every,
                                              count_eval=self.count_eval, every=self.every)
            except MoetraceError as exc:
                self.disabled = True
                warnings.warn(f"moetrace: not recording process {os.getpid()}: {exc}",
                              RuntimeWarning, stacklevel=2)
                return None
            self._hooks.append(step_hook(self.recorder))
        return self.recorder

    def pre_forward(self, module: nn.Module, args: Any) -> None:
        if module in self._seen or self.disabled:
            return
        try:
            self._attach(module)
        except Exception as exc:  # noqa: BLE001 - never into the user's forward
            self.disabled = True
            warnings.warn(f"moetrace: not recording process {os.getpid()}: "
                          f"{type(exc).__name__}: {first_line(exc)}", RuntimeWarning,
                          stacklevel=2)

    def _attach(self, module: nn.Module) -> None:
        found = list(find_moe_modules(module, skip=self._seen.__contains__))
        self._seen.update(module.modules())
        if not found:
            return
        rec = self._recorder()
        if rec is None:
            return
        top_k = None
        for name, moe, _kind, reader in found:
            self._hooks.append(hook_layer(moe, self.layers, reader, rec, name))
            self.layers += 1
            top_k = top_k or reader.k(moe)
        if rec.metadata.model is None:
            describe_model(rec, module, top_k)

    def step(self) -> None:
        if self.recorder is not None:
            self.recorder.step()

    def close(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()
        if self.recorder is not None:
            self.recorder.close()


def start() -> AutoRecorder:
    """Start recording this process into ``$MOETRACE_RECORD_DIR`` (called by sitecustomize)."""
    auto = AutoRecorder(os.environ[ENV_DIR], int(os.environ.get(ENV_FLUSH_EVERY, "100")),
                        os.environ.get(ENV_COUNT_EVAL, "0") == "1",
                        int(os.environ.get(ENV_EVERY, "1")))
    auto._hooks.append(register_module_forward_pre_hook(auto.pre_forward))
    atexit.register(auto.close)
    return auto
