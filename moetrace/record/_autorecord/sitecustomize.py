"""Switches moetrace recording on in every Python process of `moetrace record -- CMD`.

Put first on PYTHONPATH by :mod:`moetrace.record.launch`. It costs nothing until the process
imports torch: only then is :mod:`moetrace.record.autorecord` loaded, which hooks known MoE
layers as models first run. Stdlib only here, and the user's own ``sitecustomize`` (found
further along ``sys.path``) still runs.
"""

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))


class _AfterTorchImport(importlib.abc.MetaPathFinder):
    """Lets torch import as usual, then starts the recorder once torch is complete."""

    def find_spec(self, name, path=None, target=None):
        if name != "torch":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec("torch")
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_record(module):
            exec_module(module)
            _start()

        spec.loader.exec_module = exec_then_record
        return spec


def _start():
    try:
        from moetrace.record import autorecord
    except ImportError as exc:  # this interpreter has no moetrace: run the command unrecorded
        sys.stderr.write(f"moetrace: warning: not recording in {sys.executable}: {exc}\n")
        return
    autorecord.start()


def _run_user_sitecustomize():
    others = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", others)
    if spec is not None and spec.loader is not None:
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)


if os.environ.get("MOETRACE_RECORD_DIR") and "torch" not in sys.modules:
    sys.meta_path.insert(0, _AfterTorchImport())
_run_user_sitecustomize()
