"""Build the API reference from the docstrings with pdoc, into build/api/ (or the given
directory); any warning pdoc raises (a docstring it cannot render, a broken cross-reference)
fails the build. Run by `make docs` and by CI."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

#: the public library, package by package (the CLI is documented in docs/cli.md)
MODULES = ["moetrace", "moetrace.pipeline", "moetrace.trace", "moetrace.states",
           "moetrace.predictors", "moetrace.forecast",
           "moetrace.metrics", "moetrace.placement", "moetrace.report",
           "moetrace.record", "moetrace.simulate", "moetrace.errors", "moetrace.output"]


def main() -> int:
    import pdoc
    import pdoc.render

    out = Path(sys.argv[1] if len(sys.argv) > 1 else "build/api")
    pdoc.render.configure(docformat="restructuredtext", show_source=False,
                          footer_text="moetrace API reference")
    import importlib

    for name in MODULES:  # names a package imports on first use are resolved before pdoc looks
        module = importlib.import_module(name)
        for member in getattr(module, "__all__", []):
            getattr(module, member)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pdoc.pdoc(*MODULES, output_directory=out)
    pages = sorted(p.relative_to(out) for p in out.rglob("*.html"))
    print(f"API reference: {len(pages)} pages in {out}/ (open {out}/index.html)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
