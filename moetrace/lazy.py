"""Public names a package imports on first use (PEP 562), so importing the package stays
light: ``import moetrace``, the CLI's ``--help`` or listing the simulator's presets load no
numpy, polars or torch."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, names: dict[str, str],
                 missing: Callable[[ModuleNotFoundError], Exception | None] | None = None,
                 also: tuple[str, ...] = ()
                 ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``, whose public ``names`` map to the modules
    that define them (``also``: names the package defines itself, listed too). ``missing`` may
    turn a ModuleNotFoundError of an optional dependency into the error to raise instead
    (None: raise it as it is)."""
    def getattr_(name: str) -> Any:
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        try:
            module = importlib.import_module(names[name])
        except ModuleNotFoundError as exc:
            replacement = missing(exc) if missing is not None else None
            if replacement is None:
                raise
            raise replacement from None
        value = getattr(module, name)
        setattr(sys.modules[package], name, value)
        return value

    def dir_() -> list[str]:
        return sorted([*names, *also])

    return getattr_, dir_
