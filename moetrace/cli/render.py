"""What every command shares when it shows or hands over results.

* :func:`safe`: text that comes from a trace or a path (model names, metadata, file names)
  is data, never terminal commands or rich markup: control characters are shown escaped
  (``\\x1b``) and markup is made inert.
* :func:`emit_json`: the one JSON convention of every command: ``--json`` prints the
  command's JSON document on stdout (instead of the human view), ``--json-out FILE`` writes
  it to FILE under the output policy (moetrace.output).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.markup import escape

from moetrace.display import printable
from moetrace.output import write_file

#: The two JSON options, declared once for every command.
JsonFlag = Annotated[bool, typer.Option(
    "--json", help="Print the results as one JSON document on stdout instead of the table.")]
JsonOut = Annotated[Optional[Path], typer.Option(
    "--json-out", metavar="FILE", help="Also write the JSON document to FILE.")]
Force = Annotated[bool, typer.Option(
    "--force", help="Replace existing outputs (a directory only if moetrace wrote it).")]


plain = printable


def safe(text: Any) -> str:
    """``text`` ready for a rich console line: control characters escaped, markup inert."""
    return escape(plain(text))


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity: they become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def json_text(doc: Any) -> str:
    return json.dumps(_finite(doc), indent=2) + "\n"


def emit_json(doc: Any, *, to_stdout: bool, path: Path | None,
              inputs: Iterable[str | Path] = (), force: bool = False) -> None:
    """Print ``doc`` on stdout and/or write it to ``path`` (atomically, output policy)."""
    text = json_text(doc)
    if path is not None:
        with write_file(path, inputs=inputs, force=force) as tmp:
            tmp.write_text(text)
    if to_stdout:
        typer.echo(text, nl=False)
