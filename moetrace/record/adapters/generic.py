"""Readers: how one MoE module's forward tells which experts its tokens went to.

A :class:`Reader` turns ``(module, inputs, output)`` of a forward into either routed expert
ids (bincounted on the device) or per-expert counts, and hands them to the recorder. Every
framework adapter is a Reader plus the classes it applies to; users name their own modules
with :func:`from_indices` or :func:`from_counts`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from moetrace.record.recorder import TraceRecorder

ReadFn = Callable[[nn.Module, tuple, Any], "torch.Tensor | None"]


@dataclass(frozen=True)
class Reader:
    """Reads one forward of an MoE module: ``fn`` returns expert ids or counts (None: skip).

    ``fn(module, inputs, output)`` reads a finished forward; with ``pre=True`` it reads the
    call before it runs, as ``fn(module, args, kwargs)``. ``n_experts`` (ids only) is a
    number or a function of the module; ids at or above it are not counted. ``top_k`` (a
    number or a function of the module) only fills the trace's metadata.
    """

    fn: ReadFn
    counts: bool = False
    n_experts: int | Callable[[nn.Module], int] | None = None
    top_k: int | Callable[[nn.Module], int | None] | None = None
    pre: bool = False

    def experts(self, module: nn.Module) -> int:
        return self.n_experts(module) if callable(self.n_experts) else int(self.n_experts)

    def k(self, module: nn.Module) -> int | None:
        return self.top_k(module) if callable(self.top_k) else self.top_k

    def record(self, rec: TraceRecorder, layer: int, module: nn.Module, inputs: tuple,
               output: Any) -> None:
        """Count this forward into ``rec`` as MoE layer ``layer`` if the counting rule says so."""
        counter = rec.counter_for(module.training)  # the counting rule, before any work
        if counter is None:
            return
        value = self.fn(module, inputs, output)
        if value is None:
            return
        if self.counts:
            counter.add_counts(layer, value)
        else:
            counter.add_indices(layer, value, self.experts(module))


def from_indices(fn: ReadFn, n_experts: int | Callable[[nn.Module], int]) -> Reader:
    """A Reader for a module whose forward gives routed expert ids (e.g. tokens x top-k)."""
    return Reader(fn, counts=False, n_experts=n_experts)


def from_counts(fn: ReadFn) -> Reader:
    """A Reader for a module whose forward gives per-expert token counts ``(E,)``."""
    return Reader(fn, counts=True)


def integer_tensor(output: Any) -> torch.Tensor | None:
    """The first integer tensor of a forward's output (the routed expert ids of most routers)."""
    items = output if isinstance(output, (tuple, list)) else (output,)
    for item in items:
        if isinstance(item, torch.Tensor) and not item.is_floating_point() \
                and item.dtype != torch.bool:
            return item
    return None


def first_attr(module: nn.Module, names: tuple[str, ...]) -> int | None:
    """The first of ``names`` that the module has as an int attribute (configs differ in names)."""
    for name in names:
        value = getattr(module, name, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def class_match(classes: set[tuple[str, str]], reader: Reader):
    """``match(module)`` for a framework whose MoE classes are known by (module, name):
    the module itself is hooked when its class or a base is one of ``classes``."""
    def match(module: nn.Module):
        if any((base.__module__, base.__name__) in classes for base in type(module).__mro__):
            return "", module, reader
        return None
    return match
