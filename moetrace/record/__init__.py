"""Getting real traces: the streaming recorder, framework adapters and the `record -- CMD` launcher.

    rec = TraceRecorder("trace-dir", flush_every=100)
    attach(model, rec)          # hooks known MoE layers; steps at every optimizer step
    ...train...
    rec.close()

The recorder needs torch; the importers (``moetrace.record.importers``) do not, so the names
below are imported on first use rather than with the package.
"""

from __future__ import annotations

from moetrace.lazy import lazy_exports

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


def _missing_torch(exc: ModuleNotFoundError) -> Exception | None:
    """The recorder needs torch: say which extra installs it."""
    if exc.name != "torch":
        return None
    return MissingExtraError("torch", "record", "recording a training run")


__getattr__, __dir__ = lazy_exports("moetrace.record", _LAZY, missing=_missing_torch)
