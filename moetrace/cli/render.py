"""What every command shares when it shows or hands over results.

* :func:`safe`: text that comes from a trace or a path (model names, metadata, file names)
  is data, never terminal commands or rich markup: control characters are shown escaped
  (``\\x1b``) and markup is made inert.
* :func:`emit_json`: the one JSON convention of every command: ``--json`` prints the
  command's JSON document on stdout (instead of the human view), ``--json-out FILE`` writes
  it to FILE under the output policy (moetrace.output), through the one JSON writer
  (moetrace.jsondoc).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from moetrace.display import printable
from moetrace.jsondoc import dumps
from moetrace.output import write_file

plain = printable


def safe(text: Any) -> str:
    """``text`` ready for a rich console line: control characters escaped, markup inert."""
    from rich.markup import escape

    return escape(plain(text))


def emit_json(doc: Any, *, to_stdout: bool, path: Path | None,
              inputs: Iterable[str | Path] = (), force: bool = False) -> None:
    """Print ``doc`` on stdout and/or write it to ``path`` (atomically, output policy)."""
    text = dumps(doc)
    if path is not None:
        with write_file(path, inputs=inputs, force=force) as tmp:
            tmp.write_text(text)
    if to_stdout:
        sys.stdout.write(text)
        sys.stdout.flush()
