"""`moetrace info TRACE`: placeholder, filled in by the foundation work."""

from moetrace.cli.app import app, not_available


@app.command()
def info(trace: str) -> None:
    """Describe a trace."""
    not_available("info", "foundation")
