"""Render report blocks as GitHub-flavoured Markdown (figures linked from figures/)."""

from __future__ import annotations

from moetrace.display import printable
from moetrace.report.blocks import Block, Bullets, Code, Heading, Image, Paragraph, Table


def _text(text: str) -> str:
    """Report text as Markdown shows it: control characters escaped, raw HTML inert."""
    return printable(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cell(text: str) -> str:
    return _text(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(blocks: list[Block]) -> str:
    """The whole report as one Markdown document."""
    out: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            out.append(f"{'#' * block.level} {_text(block.text)}")
        elif isinstance(block, Paragraph):
            out.append(_text(block.text))
        elif isinstance(block, Bullets):
            out.append("\n".join(f"- {_text(item)}" for item in block.items))
        elif isinstance(block, Table):
            lines = [f"| {' | '.join(_cell(h) for h in block.headers)} |",
                     f"|{'|'.join('---' for _ in block.headers)}|"]
            lines += [f"| {' | '.join(_cell(c) for c in row)} |" for row in block.rows]
            if block.caption:
                lines = [f"*{_text(block.caption)}*", "", *lines]
            out.append("\n".join(lines))
        elif isinstance(block, Image):
            out.append(f"![{_text(block.caption)}]({block.file})\n\n*{_text(block.caption)}*")
        elif isinstance(block, Code):
            out.append(f"```\n{printable(block.text).replace('```', '` ` `')}\n```")
    return "\n\n".join(out) + "\n"
