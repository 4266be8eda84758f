"""The canonical trace format: schema, lazy reader with validation, atomic writer, arrays."""

from moetrace.trace.read import Trace, read_trace
from moetrace.trace.schema import TraceMetadata
from moetrace.trace.shares import Loads, load_shares
from moetrace.trace.write import TraceWriter, write_trace

__all__ = ["Loads", "Trace", "TraceMetadata", "TraceWriter", "load_shares", "read_trace",
           "write_trace"]
