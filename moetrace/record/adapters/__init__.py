"""Attach a recorder to a model: find the MoE layers of known frameworks and hook them.

The registry is explicit: one module per framework, each with a ``match(module)`` that says
whether and how it reads that module (by what the module is, holds and is called with; see
each adapter), returning the module to hook (the module itself or one of its children) and
its Reader. User-named classes come first. MoE layers are numbered 0.. in module order; a
matched module's own submodules are not searched again, so no layer is counted twice.

Every hook is guarded: no failure while counting can reach the model's forward or backward.
A hook that fails takes itself off that module, warns once naming the module and the reason,
and the recorder leaves the layer out (see :meth:`TraceRecorder.skip_layer`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook

from moetrace.errors import ParameterError, first_line
from moetrace.record.adapters import deepspeed, hf, megatron, torchtitan
from moetrace.record.adapters.generic import Reader, from_counts, from_indices
from moetrace.record.recorder import TraceRecorder

#: A match: (name of the module to hook relative to the matched one, "" for itself; that
#: module; how to read it)
Match = tuple[str, nn.Module, Reader]

#: name -> match(module): how this framework reads the module, or None if it is not its MoE
ADAPTERS: dict[str, Callable[[nn.Module], Match | None]] = {
    "hf": hf.match,
    "deepspeed": deepspeed.match,
    "megatron": megatron.match,
    "torchtitan": torchtitan.match,
}


@dataclass(frozen=True)
class AttachedLayer:
    layer: int  # the MoE layer number in the trace
    name: str  # the hooked module's qualified name in the model
    kind: str  # the adapter that reads it ("hf", ..., or "user")
    module_class: str


@dataclass
class Attachment:
    """What :func:`attach` hooked; ``remove()`` takes every hook off again."""

    layers: list[AttachedLayer] = field(default_factory=list)
    _handles: list[Any] = field(default_factory=list, repr=False)

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


def _user_reader(cls: type, modules: Mapping[type | str, Reader]) -> Reader | None:
    for base in cls.__mro__:
        for key in (base, base.__name__, f"{base.__module__}.{base.__qualname__}"):
            if key in modules:
                return modules[key]
    return None


def reader_for(module: nn.Module, modules: Mapping[type | str, Reader] | None = None
               ) -> tuple[str, Match] | None:
    """Which adapter reads this module (user-named classes first) and how, or None."""
    if modules:
        reader = _user_reader(type(module), modules)
        if reader is not None:
            return "user", ("", module, reader)
    for name, match in ADAPTERS.items():
        found = match(module)
        if found is not None:
            return name, found
    return None


def find_moe_modules(model: nn.Module, modules: Mapping[type | str, Reader] | None = None,
                     skip: Callable[[nn.Module], bool] = lambda m: False
                     ) -> Iterator[tuple[str, nn.Module, str, Reader]]:
    """(qualified name, module to hook, adapter, reader) of every MoE layer in module order,
    not descending into a match or a ``skip``-ped module."""
    stack: list[tuple[str, nn.Module]] = [("", model)]
    while stack:
        name, module = stack.pop()
        if skip(module):
            continue
        found = reader_for(module, modules)
        if found is not None:
            kind, (child, target, reader) = found
            qualified = ".".join(p for p in (name, child) if p)
            yield qualified, target, kind, reader
            continue
        children = [(f"{name}.{n}" if name else n, m) for n, m in module.named_children()]
        stack.extend(reversed(children))


def hook_layer(module: nn.Module, layer: int, reader: Reader, rec: TraceRecorder,
               name: str = "") -> Any:
    """Count every forward of ``module`` as MoE layer ``layer``; returns the hook handle.

    Guarded: an exception while reading is never raised into the forward; the hook removes
    itself and the recorder skips the layer, with one warning naming the module and why.
    """
    handle = None
    label = f"{name or type(module).__name__} ({type(module).__name__})"

    def read(mod: nn.Module, first: Any, second: Any) -> None:
        try:
            reader.record(rec, layer, mod, first, second)
        except Exception as exc:  # noqa: BLE001 - nothing may reach the training loop
            if handle is not None:
                handle.remove()
            rec.skip_layer(layer, f"{label}: {type(exc).__name__}: {first_line(exc)}")

    if reader.pre:
        handle = module.register_forward_pre_hook(
            lambda mod, args, kwargs: read(mod, args, kwargs), with_kwargs=True)
    else:
        handle = module.register_forward_hook(lambda mod, args, out: read(mod, args, out))
    return handle


def describe_model(rec: TraceRecorder, model: nn.Module, top_k: int | None) -> None:
    """Fill the trace metadata the user left empty: model class and top-k."""
    meta = rec.metadata
    rec.metadata = replace(meta, model=meta.model or type(model).__name__,
                           top_k=meta.top_k or top_k)


def step_hook(rec: TraceRecorder) -> Any:
    """End a recorder step after every optimizer step (guarded like the layer hooks)."""
    return register_optimizer_step_post_hook(lambda *_: rec.step())


def attach(model: nn.Module, rec: TraceRecorder, *,
           modules: Mapping[type | str, Reader] | None = None,
           first_layer: int = 0) -> Attachment:
    """Hook every MoE layer of ``model`` into ``rec`` and end steps at each optimizer step.

    ``modules`` maps extra classes (or class names) to Readers (:func:`from_indices`,
    :func:`from_counts`). Raises :class:`ParameterError` if no MoE layer is found (before
    training starts; nothing raises once it runs).
    """
    attachment = Attachment()
    top_k = None
    for layer, (name, module, kind, reader) in enumerate(find_moe_modules(model, modules),
                                                         start=first_layer):
        attachment._handles.append(hook_layer(module, layer, reader, rec, name))
        attachment.layers.append(AttachedLayer(layer, name, kind, type(module).__name__))
        top_k = top_k or reader.k(module)
    if not attachment.layers:
        known = ", ".join(ADAPTERS)
        raise ParameterError(f"no MoE layer found in {type(model).__name__} (known: {known}); "
                             "name your MoE module class with modules={Class: from_indices(...)}")
    describe_model(rec, model, top_k)
    attachment._handles.append(step_hook(rec))
    return attachment


__all__ = ["ADAPTERS", "AttachedLayer", "Attachment", "Reader", "attach", "find_moe_modules",
           "from_counts", "from_indices", "hook_layer", "reader_for"]
