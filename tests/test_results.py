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


def test_store_benchmark_runs_and_appending_stays_flat(capsys):
    """The store benchmark itself works; appending a row must not cost more in a file of
    2,000 rows than in an empty one (a rewriting store would, by about 2,000x)."""
    from bench.perf.__main__ import main

    assert main(["store", "--rows", "2000", "--block", "500", "--sizes", "100,1000", "--samples", "2"]) == 0
    out = capsys.readouterr().out
    assert "append store (one write per row)" in out and "rewriting store, 2,000 rows in all" in out
    from bench.perf.store import bench_store

    r = bench_store(2000, 500, [100, 1000], 2)
    assert r["append_last"] < 3 * r["append_first"]
    assert r["rewrite_per_size"][1000] > 3 * r["rewrite_per_size"][100]  # the baseline does grow with the file
