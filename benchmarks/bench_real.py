"""The public real training trace (SmartMoE's expert selection dataset), when a user has it.

The data are GPL-3.0 and not shipped: fetch thu-pacman/SmartMoE-AE and point
``MOETRACE_SMARTMOE`` at its ``moe_trace/`` folder (the ``table_iter{N}_rank{R}.log`` files).
Measures the import and the default report, each in a fresh process, and prints the report's
bottom line; without the data it says how to get them and measures nothing.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

from benchmarks.common import measure, print_figures

_IMPORT = """
from moetrace.record.importers import import_trace
with timed("import smartmoe tables"):
    import_trace("smartmoe", {src!r}, {out!r}, force=True)
"""

_REPORT = """
import json
import moetrace
with timed("default report"):
    report = moetrace.build_report({path!r}, {out!r}, force=True)
open({summary!r}, "w").write(json.dumps(report.document["bottom_line"]))
"""


def main(runs: int = 3) -> None:
    src = os.environ.get("MOETRACE_SMARTMOE")
    if not src or not Path(src).is_dir():
        print("\n## real: skipped (set MOETRACE_SMARTMOE to the moe_trace/ folder of "
              "thu-pacman/SmartMoE-AE; the data are GPL-3.0 and not shipped with moetrace)")
        return
    with tempfile.TemporaryDirectory() as tmp:
        trace, out, summary = (str(Path(tmp) / n) for n in ("t.parquet", "rep", "bl.json"))
        print_figures("real: SmartMoE tables -> trace",
                      measure(_IMPORT.format(src=src, out=trace), runs=runs), runs)
        print_figures("real: default report on the SmartMoE trace",
                      measure(_REPORT.format(path=trace, out=out, summary=summary), runs=runs),
                      runs)
        for line in json.loads(Path(summary).read_text()):
            if not line["ranked"]:
                print(f"  {line['horizon']:>5} {line['state']:<9} {line['reason']}")
                continue
            print(f"  {line['horizon']:>5} {line['state']:<9} best {line['best']:<7} "
                  f"{100 * line['error_rate']:.2f}%  constant bound "
                  f"{100 * (line['constant_bound'] or float('nan')):.2f}%  "
                  f"{line['origins']} origins, {line['pairs']} pairs  {line['verdicts']}")


if __name__ == "__main__":
    main(runs=int(sys.argv[1]) if len(sys.argv) > 1 else 3)
