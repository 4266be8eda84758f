"""The few kinds of block a report is made of; markdown.py and html.py each render them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Heading:
    level: int
    text: str


@dataclass(frozen=True)
class Paragraph:
    text: str
    lead: bool = False  # the report's first sentence, which a page shows first and larger


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    caption: str = ""
    name: str = ""  # a class the HTML gives the table's container (its own layout rules)


@dataclass(frozen=True)
class Image:
    file: str  # relative to the report directory, e.g. figures/error_by_layer.png
    caption: str


@dataclass(frozen=True)
class Code:
    text: str


Block = Heading | Paragraph | Bullets | Table | Image | Code
