"""`python -m moetrace` runs the CLI."""

from moetrace.cli import main

main()
