"""Getting real traces: the streaming recorder, framework adapters and the `record -- CMD` launcher.

    rec = TraceRecorder("trace-dir", flush_every=100)
    attach(model, rec)          # hooks known MoE layers; steps at every optimizer step
    ...train...
    rec.close()
"""

from moetrace.record.adapters import Attachment, Reader, attach, from_counts, from_indices
from moetrace.record.recorder import TraceRecorder, eval_dir, rank_from_env

__all__ = ["Attachment", "Reader", "TraceRecorder", "attach", "eval_dir", "from_counts",
           "from_indices", "rank_from_env"]
