"""Getting real traces: the streaming recorder, framework adapters and the `record -- CMD` launcher.

    rec = TraceRecorder("trace-dir", flush_every=100)
    attach(model, rec)          # hooks known MoE layers; steps at every optimizer step
    ...train...
    rec.close()

The recorder needs torch; the importers (``moetrace.record.importers``) do not, so the names
below are imported on first use rather than with the package.
"""

from __future__ import annotations

import importlib
from typing import Any

from moetrace.errors import MissingExtraError

_LAZY = {
    "Attachment": "moetrace.record.adapters",
    "Reader": "moetrace.record.adapters",
    "attach": "moetrace.record.adapters",
    "from_counts": "moetrace.record.adapters",
    "from_indices": "moetrace.record.adapters",
    "TraceRecorder": "moetrace.record.recorder",
    "eval_dir": "moetrace.record.recorder",
    "rank_from_env": "moetrace.record.recorder",
    "record_command": "moetrace.record.launch",
    "train_demo": "moetrace.record.demo",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'moetrace.record' has no attribute {name!r}")
    try:
        module = importlib.import_module(_LAZY[name])
    except ModuleNotFoundError as exc:
        if exc.name != "torch":
            raise
        raise MissingExtraError("torch", "record", "recording a training run") from None
    value = getattr(module, name)
    globals()[name] = value
    return value
