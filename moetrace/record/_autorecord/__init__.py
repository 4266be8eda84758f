"""Holds only the ``sitecustomize`` that `moetrace record -- CMD` puts on the child's PYTHONPATH."""
