"""What a path given on the command line means: itself if it exists, a pattern only if not.

A file named ``run[1].parquet`` is that file, never the pattern matching ``run1.parquet``:
a path that exists is always taken literally, and only a path that does not exist may be a
glob (``*``, ``?``, ``[...]``, ``**``). The reader and the output policy both use this rule.
"""

from __future__ import annotations

import glob as globlib
from pathlib import Path

GLOB_CHARACTERS = "*?["


def is_pattern(label: str | Path) -> bool:
    """Whether ``label`` is read as a glob: it does not exist and holds a glob character."""
    text = str(label)
    return not Path(text).exists() and any(ch in text for ch in GLOB_CHARACTERS)


def expand(label: str | Path) -> list[Path]:
    """The paths behind ``label``: itself if it exists (or is no pattern), else its matches."""
    if not is_pattern(label):
        return [Path(label)]
    return sorted(Path(p) for p in globlib.glob(str(label), recursive=True))
