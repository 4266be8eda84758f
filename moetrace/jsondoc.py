"""The one JSON writer of every document moetrace emits (report.json, ``--json``,
``--json-out``, analysis and plan files, watch's lines).

JSON has no NaN or infinity: such a number becomes null, everywhere the same way. Documents
are indented by :data:`INDENT`; a stream of documents (``watch --json``) has one compact
document per line.
"""

from __future__ import annotations

import json
import math
from typing import Any

INDENT = 2


def number(value: Any) -> float | None:
    """A plain float for JSON; None for a missing value, NaN or an infinity."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def plain(value: Any) -> Any:
    """``value`` with every non-finite float made None and numpy scalars and arrays made
    plain Python (their ``tolist()``), recursively."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if hasattr(value, "tolist"):  # a numpy array or scalar
        return plain(value.tolist())
    if isinstance(value, float):
        return number(value)
    return value


def dumps(doc: Any) -> str:
    """A document as JSON text, indented, ending in a newline."""
    return json.dumps(plain(doc), indent=INDENT, allow_nan=False) + "\n"


def line(doc: Any) -> str:
    """A document as one line of JSON (a stream's element), ending in a newline."""
    return json.dumps(plain(doc), separators=(",", ":"), allow_nan=False) + "\n"
