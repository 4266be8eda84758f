"""Scale: traces larger than memory, worked a chunk of layers at a time, on local processes
or a Ray cluster (moetrace.pipeline runs the chunks and joins them). See docs/scaling.md.

- :mod:`moetrace.scale.chunks`: chunks of layers that fit a memory budget;
- :mod:`moetrace.scale.executor`: ``local`` (a process pool) and ``ray`` executors of one
  task function;
- :mod:`moetrace.scale.tasks`: the units of work (trace handle, layer chunk, settings);
- :mod:`moetrace.scale.convert`: any trace rewritten layer-major, so that a chunk's read
  reads only its layers' bytes.
"""

from moetrace.scale.chunks import layer_chunks, validation_rows
from moetrace.scale.executor import BACKENDS, Local, Ray, make_executor

__all__ = ["BACKENDS", "Local", "Ray", "layer_chunks", "make_executor",
           "validation_rows"]
