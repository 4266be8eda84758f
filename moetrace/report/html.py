"""Render report blocks as one self-contained HTML page: inline CSS, figures as base64 PNG.

Nothing is fetched from the network: no external stylesheet, script, font or image.
"""

from __future__ import annotations

import base64
from html import escape as _escape
from pathlib import Path

from moetrace.display import printable
from moetrace.report.blocks import Block, Bullets, Code, Heading, Image, Paragraph, Table

def escape(text: str) -> str:
    """Report text as HTML shows it: control characters escaped, markup inert."""
    return _escape(printable(text))


_CSS = """
* { box-sizing: border-box; }
body { font-family: system-ui, sans-serif; max-width: 70em; margin: 2em auto; padding: 0 1em;
       color: #222; line-height: 1.45; overflow-wrap: break-word; }
.table { overflow-x: auto; margin: 0.5em 0 1.5em; -webkit-overflow-scrolling: touch; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f2f2f2; }
td:first-child, th:first-child { text-align: left; }
caption { caption-side: top; text-align: left; font-style: italic; padding-bottom: 0.3em; }
figure { margin: 1em 0 2em; }
figure img { max-width: 100%; height: auto; display: block; }
figcaption { font-style: italic; font-size: 0.9em; }
pre { background: #f6f6f6; padding: 0.6em; overflow-x: auto; white-space: pre-wrap; }
.bottom-line td { white-space: nowrap; }
.bottom-line :is(td, th):is(:nth-child(2), :nth-child(5), :last-child) { text-align: left; }
.bottom-line td:last-child { white-space: normal; min-width: 18em; }
p.headline { font-size: 1.15em; font-weight: 600; border-left: 4px solid #2c7;
             padding-left: 0.6em; }
@media (max-width: 600px) {
  body { margin: 1em auto; padding: 0 0.6em; font-size: 15px; }
  table { font-size: 0.8em; }
  th, td { padding: 0.2em 0.35em; }
}
"""


def render_html(blocks: list[Block], root: Path, title: str) -> str:
    """The whole report as one HTML page; images are read from ``root`` and embedded."""
    body: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            body.append(f"<h{block.level}>{escape(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            lead = ' class="headline"' if block.lead else ""
            body.append(f"<p{lead}>{escape(block.text)}</p>")
        elif isinstance(block, Bullets):
            items = "".join(f"<li>{escape(item)}</li>" for item in block.items)
            body.append(f"<ul>{items}</ul>")
        elif isinstance(block, Table):
            caption = f"<caption>{escape(block.caption)}</caption>" if block.caption else ""
            head = "".join(f"<th>{escape(h)}</th>" for h in block.headers)
            rows = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>"
                           for row in block.rows)
            thead = f"<thead><tr>{head}</tr></thead>" if any(block.headers) else ""
            name = f" {escape(block.name)}" if block.name else ""
            body.append(f'<div class="table{name}"><table>{caption}{thead}'
                        f"<tbody>{rows}</tbody></table></div>")
        elif isinstance(block, Image):
            data = base64.b64encode((root / block.file).read_bytes()).decode("ascii")
            body.append(f'<figure><img alt="{escape(block.caption)}" '
                        f'data-file="{escape(block.file)}" src="data:image/png;base64,{data}">'
                        f"<figcaption>{escape(block.caption)}</figcaption></figure>")
        elif isinstance(block, Code):
            body.append(f"<pre><code>{escape(block.text)}</code></pre>")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")
