"""Atomic writes: a reader sees the old file or the new one, with ordinary permissions."""
from __future__ import annotations

import os

import pytest

from bench.results import atomic_write, atomic_write_bytes


def test_atomic_write_creates_files_as_open_would(tmp_path):
    atomic_write(tmp_path / "new.csv", "a,b\n")
    (tmp_path / "plain.csv").write_text("a,b\n")
    umask = os.umask(0)
    os.umask(umask)
    mode = (tmp_path / "new.csv").stat().st_mode & 0o777
    assert mode == (tmp_path / "plain.csv").stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600
    assert (tmp_path / "new.csv").read_text() == "a,b\n"


def test_atomic_write_keeps_an_existing_files_mode_and_leaves_no_temporaries(tmp_path):
    p = tmp_path / "rows.csv"
    p.write_text("old\n")
    p.chmod(0o640)
    atomic_write(p, "new\n")
    assert p.read_text() == "new\n" and p.stat().st_mode & 0o777 == 0o640
    assert sorted(f.name for f in tmp_path.iterdir()) == ["rows.csv"]


def test_a_failed_write_leaves_the_old_file(tmp_path):
    p = tmp_path / "rows.csv"
    p.write_text("old\n")
    with pytest.raises(TypeError):
        atomic_write_bytes(p, "not bytes")  # type: ignore[arg-type]
    assert p.read_text() == "old\n" and sorted(f.name for f in tmp_path.iterdir()) == ["rows.csv"]
