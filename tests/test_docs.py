"""docs/cli.md documents every command and every option the CLI has."""

from __future__ import annotations

from pathlib import Path

import pytest
import click

from moetrace.cli import app

DOC = (Path(__file__).resolve().parents[1] / "docs" / "cli.md").read_text()
COMMANDS = app.commands


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_command_and_its_options_are_documented(name):
    assert f"## `moetrace {name}" in DOC
    section = DOC.split(f"## `moetrace {name}", 1)[1].split("\n## ", 1)[0]
    options = [p for p in COMMANDS[name].params if p.param_type_name == "option"]
    assert options, "no options found: the check below would pass vacuously"
    for param in options:
        if "--help" not in param.opts:
            assert any(f"`{opt}" in section for opt in param.opts), \
                f"{param.opts} of `moetrace {name}` is not in docs/cli.md"


ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md")),
         ROOT / "sample_traces" / "README.md"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_stay_inside_the_repository_and_resolve(page):
    import re

    for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
        if target.startswith("#"):
            continue
        assert "://" not in target, f"{page.name} links outside the repository: {target}"
        path = (page.parent / target.split("#")[0]).resolve()
        assert path.is_relative_to(ROOT), f"{page.name} links outside the repository: {target}"
        assert path.exists(), f"{page.name} links to {target}, which does not exist"
