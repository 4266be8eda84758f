"""`moetrace report`: placeholder until its issue lands."""

from moetrace.cli.app import app, not_available


@app.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
def report() -> None:
    """Not available yet."""
    not_available("report", "see the project's open issues")
