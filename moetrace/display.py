"""Text from a trace (model names, metadata, paths) is data: shown, never obeyed.

:func:`printable` escapes control and format characters (``\\x1b`` stays four visible
characters), so metadata cannot set a window title, clear a screen or reorder a line in a
terminal, a Markdown file or a web page. Each renderer adds its own quoting on top (rich
markup, HTML); JSON keeps the exact text.
"""

from __future__ import annotations

import unicodedata
from typing import Any

_HIDDEN = ("Cc", "Cf", "Cs", "Co", "Zl", "Zp")


def printable(text: Any) -> str:
    """``text`` with control and format characters shown as escapes (``\\x1b``, ``\\u202e``)."""
    text = str(text)
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if unicodedata.category(ch) in _HIDDEN:
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)


def format_bytes(value: int | None) -> str:
    """``3.4 GB``: decimal units, one decimal; ``-`` for an unknown size."""
    if value is None:
        return "-"
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if value >= size:
            return f"{value / size:,.1f} {unit}"
    return f"{value} B"


def format_seconds(value: float | None) -> str:
    """``12.3 s``, ``4.5 ms``, ``6.7 µs`` (one decimal, the sign kept); ``-`` for unknown."""
    if value is None:
        return "-"
    size = abs(value)
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if round(size / scale, 1) >= 1:  # 0.99996 s shows as 1.0 s, not 1,000.0 ms
            return f"{value / scale:,.1f} {unit}"
    return "0 s" if value == 0 else f"{value * 1e9:,.1f} ns"
