"""Atomic writing: complete or absent, never half-written; no clobbering without force."""

from __future__ import annotations

import os

import pytest

from moetrace.atomic import atomic_dir, atomic_file
from moetrace.errors import OutputExistsError


def test_atomic_file_replaces_only_on_success(tmp_path):
    dest = tmp_path / "out.txt"
    dest.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_file(dest) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert dest.read_text() == "old"
    assert os.listdir(tmp_path) == ["out.txt"]  # no temporary left behind
    with atomic_file(dest) as tmp:
        tmp.write_text("new")
    assert dest.read_text() == "new"


def test_atomic_outputs_get_the_usual_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        with atomic_file(tmp_path / "f") as tmp:
            tmp.write_text("x")
        with atomic_dir(tmp_path / "d"):
            pass
    finally:
        os.umask(umask)
    assert (tmp_path / "f").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o755


def test_atomic_dir_keeps_existing_without_force_and_on_failure(tmp_path):
    dest = tmp_path / "report"
    dest.mkdir()
    (dest / "keep.txt").write_text("previous report")
    with pytest.raises(OutputExistsError, match="pass --force"):
        with atomic_dir(dest):
            pass
    with pytest.raises(RuntimeError):
        with atomic_dir(dest, force=True) as tmp:
            (tmp / "partial.txt").write_text("x")
            raise RuntimeError("crash")
    assert sorted(os.listdir(dest)) == ["keep.txt"]
    assert sorted(os.listdir(tmp_path)) == ["report"]
    with atomic_dir(dest, force=True) as tmp:
        (tmp / "new.txt").write_text("y")
    assert sorted(os.listdir(dest)) == ["new.txt"]
    assert sorted(os.listdir(tmp_path)) == ["report"]
