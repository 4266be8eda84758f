"""`moetrace record -o DIR -- CMD`: run a training command with recording switched on.

The command runs unchanged; a ``sitecustomize`` first on its PYTHONPATH (the user's own
PYTHONPATH and sitecustomize are kept) starts :mod:`moetrace.record.autorecord` in every
Python process that imports torch, including each rank that torchrun or the deepspeed
launcher starts (each writes ``DIR/rank=R/``). The child's exit status is passed back.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from moetrace.defaults import FLUSH_EVERY
from moetrace.errors import MoetraceError, ParameterError
from moetrace.record import autorecord
from moetrace.record.recorder import eval_dir, recorded_ranks, recording_in_place
from moetrace.trace import Trace, read_trace

SITECUSTOMIZE_DIR = Path(__file__).with_name("_autorecord")


@dataclass(frozen=True)
class RecordedRun:
    """What a recorded command left: its exit status and the trace, if any could be read."""

    returncode: int  # as a shell reports it: 128 + N when killed by signal N
    out_dir: Path
    trace: Trace | None
    problem: str | None  # why there is no trace (nothing recorded, or unreadable)
    ranks: int


def child_env(out_dir: Path, *, flush_every: int, count_eval: bool, every: int = 1,
              base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The command's environment: ours first on PYTHONPATH, the recording settings set."""
    env = dict(os.environ if base is None else base)
    path = [str(SITECUSTOMIZE_DIR)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(path)
    env[autorecord.ENV_DIR] = str(out_dir.resolve())
    env[autorecord.ENV_FLUSH_EVERY] = str(flush_every)
    env[autorecord.ENV_COUNT_EVAL] = "1" if count_eval else "0"
    env[autorecord.ENV_EVERY] = str(every)
    return env


def _wait(proc: subprocess.Popen) -> int:
    """Wait for the child; Ctrl-C reaches it through the terminal, SIGTERM is forwarded."""
    def forward(signum, _frame):
        proc.send_signal(signum)
    previous = {sig: signal.signal(sig, handler) for sig, handler in
                ((signal.SIGINT, signal.SIG_IGN), (signal.SIGTERM, forward))}
    try:
        code = proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 128 - code if code < 0 else code


def record_command(command: Sequence[str], out_dir: str | Path, *, flush_every: int = FLUSH_EVERY,
                   count_eval: bool = False, every: int = 1, force: bool = False,
                   stdout: int | IO | None = None) -> RecordedRun:
    """Run ``command`` with recording on into ``out_dir``; read back what it recorded.

    A recording is written in place as it grows (so a killed job leaves its parts). With
    ``force`` a previous recording (a directory moetrace wrote) is moved aside first and
    deleted once the new one holds parts; if the command records nothing it is put back
    (:func:`~moetrace.record.recorder.recording_in_place`). ``stdout`` is where the
    command's standard output goes (a file descriptor or file; default: ours).
    """
    if not command:
        raise ParameterError("no command to record: put it after --")
    if flush_every < 1:
        raise ParameterError(f"--flush-every must be at least 1, got {flush_every}")
    if every < 1:
        raise ParameterError(f"--every must be at least 1, got {every}")
    out_dir = Path(out_dir)
    targets = [out_dir] + ([eval_dir(out_dir)] if count_eval else [])
    env = child_env(out_dir, flush_every=flush_every, count_eval=count_eval, every=every)
    with recording_in_place(targets, force=force):
        try:
            proc = subprocess.Popen(list(command), env=env, stdout=stdout)
        except (FileNotFoundError, PermissionError) as exc:
            raise ParameterError(f"cannot run {command[0]!r}: {exc.strerror}") from None
        code = _wait(proc)
        ranks = recorded_ranks(out_dir)  # before a previous recording may be put back
    if ranks == 0:
        return RecordedRun(code, out_dir, None, "no MoE layer was recorded (is the model one "
                           "of the known frameworks, and did it run a training step?)", 0)
    try:
        trace = read_trace(out_dir)
    except MoetraceError as exc:
        return RecordedRun(code, out_dir, None, str(exc), ranks)
    return RecordedRun(code, out_dir, trace, None, ranks)
