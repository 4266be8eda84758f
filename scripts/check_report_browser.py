"""Open a report in a real headless browser at desktop and phone widths: take a screenshot of
each first screen and check that nothing runs off the page.

    python scripts/check_report_browser.py REPORT_DIR [--screenshots DIR]

Uses a locally installed Chromium or Chrome (``chromium``, ``chromium-browser``,
``google-chrome``, or ``$MOETRACE_BROWSER``); says so clearly and exits 3 when there is none.
Checks, at each width: the page is no wider than the window (tables scroll inside their own
containers), every figure fits the window, the headline sentence is whole on the first screen
and the bottom line's table starts on it.
Exit 0 when every check passes, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

WIDTHS = {"desktop": (1280, 900), "phone": (400, 860)}
NO_BROWSER = 3

_PROBE = """
<script>
window.addEventListener("load", () => {
  const w = window.innerWidth, h = window.innerHeight;
  const heading = [...document.querySelectorAll("h2")].find(e => /Bottom line/.test(e.textContent));
  const table = heading && heading.nextElementSibling && heading.parentElement.querySelector("table");
  const figures = [...document.querySelectorAll("img")].map(i => i.getBoundingClientRect().width);
  const lead = document.querySelector("p.headline");
  const result = {
    width: w, page_width: document.documentElement.scrollWidth,
    widest_figure: figures.length ? Math.max(...figures) : 0,
    bottom_line_top: heading ? heading.getBoundingClientRect().top : null,
    bottom_line_table_top: table ? table.getBoundingClientRect().top : null,
    headline_bottom: lead ? lead.getBoundingClientRect().bottom : null,
    first_screen: h,
  };
  const pre = document.createElement("pre");
  pre.id = "moetrace-probe";
  pre.textContent = JSON.stringify(result);
  document.body.appendChild(pre);
});
</script>
"""


def find_browser() -> str | None:
    for name in (os.environ.get("MOETRACE_BROWSER"), "chromium", "chromium-browser",
                 "google-chrome", "google-chrome-stable"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _run(browser: str, args: list[str], size: tuple[int, int]) -> str:
    base = [browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            "--allow-file-access-from-files", f"--window-size={size[0]},{size[1]}",
            "--virtual-time-budget=5000"]
    proc = subprocess.run(base + args, capture_output=True, text=True, timeout=120)
    return proc.stdout


def check(report: Path, screenshots: Path | None) -> list[str]:
    browser = find_browser()
    if browser is None:
        raise FileNotFoundError("no Chromium or Chrome found (install chromium, or set "
                                "MOETRACE_BROWSER to a browser's path)")
    html = (report / "report.html").read_text()
    problems = []
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / "probe.html"
        probe.write_text(html.replace("</body>", _PROBE + "</body>"))
        for label, size in WIDTHS.items():
            dom = _run(browser, ["--dump-dom", probe.as_uri()], size)
            found = re.search(r'<pre id="moetrace-probe">(.*?)</pre>', dom, re.S)
            if not found:
                problems.append(f"{label}: the page did not load in the browser")
                continue
            m = json.loads(found.group(1).replace("&quot;", '"'))
            if m["page_width"] > m["width"]:
                problems.append(f"{label}: the page is {m['page_width']} px wide in a "
                                f"{m['width']} px window (something runs off the page)")
            if m["widest_figure"] > m["width"]:
                problems.append(f"{label}: a figure is {m['widest_figure']:.0f} px wide")
            end = m["headline_bottom"]
            if end is None or end > m["first_screen"]:
                problems.append(f"{label}: the headline sentence is not whole on the first "
                                f"screen (it ends at {end} px, screen {m['first_screen']} px)")
            top = m["bottom_line_table_top"]
            if top is None or top > m["first_screen"]:
                problems.append(f"{label}: the bottom line's table is not on the first screen "
                                f"(top at {top} px, screen {m['first_screen']} px)")
            if screenshots is not None:
                screenshots.mkdir(parents=True, exist_ok=True)
                shot = screenshots / f"report-{label}.png"
                _run(browser, [f"--screenshot={shot}", (report / "report.html").as_uri()],
                     size)
                if not shot.exists():
                    problems.append(f"{label}: no screenshot was written")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="a report directory (moetrace report -o)")
    parser.add_argument("--screenshots", type=Path, help="write report-desktop.png and "
                        "report-phone.png (first screens) here")
    args = parser.parse_args()
    try:
        problems = check(args.report, args.screenshots)
    except FileNotFoundError as exc:
        print(f"browser check skipped: {exc}", file=sys.stderr)
        return NO_BROWSER
    for problem in problems:
        print(f"FAIL {problem}")
    if not problems:
        print(f"report {args.report} passes at " + ", ".join(
            f"{k} ({w} px)" for k, (w, _) in WIDTHS.items()))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
