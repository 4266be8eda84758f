"""Attach a recorder to a model: find the MoE layers of known frameworks and hook them.

The registry is explicit: one module per framework, each saying which classes it reads
(matched through the MRO by defining module and name, so nothing is imported to check) and
how. User-named classes come first. MoE layers are numbered 0.. in module order; a matched
module's own submodules are not searched again, so no layer is counted twice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook

from moetrace.errors import ParameterError
from moetrace.record.adapters import deepspeed, hf, megatron, torchtitan
from moetrace.record.adapters.generic import Reader, from_counts, from_indices
from moetrace.record.recorder import TraceRecorder

#: name -> (does this class belong to the framework?, how to read its forward)
ADAPTERS: dict[str, tuple[Callable[[type], bool], Reader]] = {
    "hf": (hf.matches, hf.READER),
    "deepspeed": (deepspeed.matches, deepspeed.READER),
    "megatron": (megatron.matches, megatron.READER),
    "torchtitan": (torchtitan.matches, torchtitan.READER),
}


@dataclass(frozen=True)
class AttachedLayer:
    layer: int  # the MoE layer number in the trace
    name: str  # the module's qualified name in the model
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
               ) -> tuple[str, Reader] | None:
    """Which adapter reads this module (user-named classes first), or None if it is no MoE."""
    cls = type(module)
    if modules:
        reader = _user_reader(cls, modules)
        if reader is not None:
            return "user", reader
    for name, (matches, reader) in ADAPTERS.items():
        if any(matches(base) for base in cls.__mro__):
            return name, reader
    return None


def find_moe_modules(model: nn.Module, modules: Mapping[type | str, Reader] | None = None,
                     skip: Callable[[nn.Module], bool] = lambda m: False
                     ) -> Iterator[tuple[str, nn.Module, str, Reader]]:
    """MoE modules in module order, not descending into a match or a ``skip``-ped module."""
    stack: list[tuple[str, nn.Module]] = [("", model)]
    while stack:
        name, module = stack.pop()
        if skip(module):
            continue
        found = reader_for(module, modules)
        if found is not None:
            yield name, module, found[0], found[1]
            continue
        children = [(f"{name}.{n}" if name else n, m) for n, m in module.named_children()]
        stack.extend(reversed(children))


def hook_layer(module: nn.Module, layer: int, reader: Reader, rec: TraceRecorder) -> Any:
    """Count every forward of ``module`` as MoE layer ``layer``; returns the hook handle."""
    def hook(mod: nn.Module, inputs: tuple, output: Any) -> None:
        reader.record(rec, layer, mod, inputs, output)
    return module.register_forward_hook(hook)


def describe_model(rec: TraceRecorder, model: nn.Module, top_k: int | None) -> None:
    """Fill the trace metadata the user left empty: model class and top-k."""
    meta = rec.metadata
    rec.metadata = replace(meta, model=meta.model or type(model).__name__,
                           top_k=meta.top_k or top_k)


def attach(model: nn.Module, rec: TraceRecorder, *,
           modules: Mapping[type | str, Reader] | None = None,
           first_layer: int = 0) -> Attachment:
    """Hook every MoE layer of ``model`` into ``rec`` and end steps at each optimizer step.

    ``modules`` maps extra classes (or class names) to Readers (:func:`from_indices`,
    :func:`from_counts`). Raises :class:`ParameterError` if no MoE layer is found.
    """
    attachment = Attachment()
    top_k = None
    for layer, (name, module, kind, reader) in enumerate(find_moe_modules(model, modules),
                                                         start=first_layer):
        attachment._handles.append(hook_layer(module, layer, reader, rec))
        attachment.layers.append(AttachedLayer(layer, name, kind, type(module).__name__))
        top_k = top_k or reader.k(module)
    if not attachment.layers:
        known = ", ".join(ADAPTERS)
        raise ParameterError(f"no MoE layer found in {type(model).__name__} (known: {known}); "
                             "name your MoE module class with modules={Class: from_indices(...)}")
    describe_model(rec, model, top_k)
    attachment._handles.append(register_optimizer_step_post_hook(lambda *_: rec.step()))
    return attachment


__all__ = ["ADAPTERS", "AttachedLayer", "Attachment", "Reader", "attach", "find_moe_modules",
           "from_counts", "from_indices", "hook_layer", "reader_for"]
