"""Where a matrix's rows live: ``<dir>/<matrix>.csv``, plus one learning curve per cell in
``<dir>/curves/<cell_hash>.json``.

Appending a row is O(1): one ``write`` of one complete line to the end of the file, fsynced,
under the file's lock, so the cost does not grow with the rows already there (the benchmark
``python -m bench.perf store`` measures it). A crash cannot leave a half line in the middle
of the file: a line is written by a single system call after everything before it, and a
torn last line (power loss) is dropped and cut off before the next append. A cell that is
run again (``--retry-failed``, ``--regenerate``) appends its new row; readers keep the last
row of each cell, and `compact` rewrites the file atomically without the superseded rows at
the end of such a run. Files written by an older uebench (another set of columns) are
rewritten once in the current format before the first append.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from filelock import FileLock

from bench.atomic import atomic_write
from bench.results import ResultRow, ResultsFileError, encode, header_line, parse_csv, read_rows, render

log = logging.getLogger("uebench.results")


class ResultStore:
    """The rows of one matrix in ``<dir>/<matrix>.csv`` and curves in ``<dir>/curves/``."""

    def __init__(self, directory: Path, matrix: str):
        self.dir = Path(directory)
        self.path = self.dir / f"{matrix}.csv"
        self.curves = self.dir / "curves"
        self.lock = FileLock(str(self.path) + ".lock")

    # -- reading ----------------------------------------------------------------------------
    def rows(self) -> list[ResultRow]:
        """The rows (last per cell), ignoring a torn last line; [] when there is no file."""
        if not self.path.exists():
            return []
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            log.warning("%s: its last line is incomplete (an interrupted write); ignoring it", self.path)
        return _parse(data, self.path)

    def stamp(self) -> tuple | None:
        """Changes whenever the file does (size, mtime, inode): cheap change detection."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    # -- writing ----------------------------------------------------------------------------
    def append(self, row: ResultRow, curve: list[dict] | None = None) -> None:
        """Add ``row`` at the end of the file in one write (its curve first, atomically)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        if curve is not None:
            self.curves.mkdir(parents=True, exist_ok=True)
            atomic_write(self.curves / f"{row.cell_hash}.json", json.dumps({"cell_hash": row.cell_hash, "curve": curve}, indent=1))
        line = encode(row).encode()
        with self.lock:
            self._prepare()
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)

    def _prepare(self) -> None:
        """Make the file ready for an append: create it with the header, cut a torn last
        line, or rewrite a file of another schema in the current one (under the lock)."""
        want = header_line().encode()
        if not self.path.exists() or self.path.stat().st_size == 0:
            atomic_write(self.path, want.decode())
            return
        with open(self.path, "rb") as fh:
            first = fh.readline()
            fh.seek(-1, os.SEEK_END)
            ends_clean = fh.read(1) == b"\n"
        if first != want:
            log.warning("%s: rewriting in the current column order before appending", self.path)
            self._write(_parse(self.path.read_bytes(), self.path, tolerate_torn=True))
        elif not ends_clean:
            data = self.path.read_bytes()
            log.warning("%s: cutting an incomplete last line (an interrupted write)", self.path)
            with open(self.path, "r+b") as fh:
                fh.truncate(data.rfind(b"\n") + 1)
                os.fsync(fh.fileno())

    def compact(self) -> int:
        """Rewrite the file keeping only the last row of each cell; returns the rows dropped."""
        with self.lock:
            if not self.path.exists():
                return 0
            every = _parse(self.path.read_bytes(), self.path, tolerate_torn=True, dedupe=False)
            last = list({r.cell_hash: r for r in every}.values())
            if len(last) != len(every):
                self._write(last)
            return len(every) - len(last)

    def prune(self, keep: set[str]) -> list[ResultRow]:
        """Drop the rows (and curves) of cells not in ``keep``, atomically; return them.

        Why: a config edited after a run leaves rows of cells it no longer has; they are
        results of another experiment and should not be published under this matrix."""
        with self.lock:
            rows = self.rows()
            gone = [r for r in rows if r.cell_hash not in keep]
            if gone or len(rows) != _count_lines(self.path):
                self._write([r for r in rows if r.cell_hash in keep])
        # a cell's hash does not depend on the matrix, so another matrix may share the curve
        used = set()
        for other in self.dir.glob("*.csv"):
            try:
                used |= {r.cell_hash for r in read_rows(other)}
            except ResultsFileError:
                continue
        for r in gone:
            if r.cell_hash not in used:
                (self.curves / f"{r.cell_hash}.json").unlink(missing_ok=True)
        return gone

    def _write(self, rows: list[ResultRow]) -> None:
        atomic_write(self.path, render(rows))


def _count_lines(path: Path) -> int:
    """Data lines in a results file (rows, duplicates included)."""
    if not path.exists():
        return 0
    return max(0, path.read_bytes().count(b"\n") - 1)


def _parse(data: bytes, path: Path, tolerate_torn: bool = True, dedupe: bool = True) -> list[ResultRow]:
    """`parse_csv`, without the torn last line a crash may have left."""
    if tolerate_torn and data and not data.endswith(b"\n"):
        data = data[: data.rfind(b"\n") + 1]
    return parse_csv(data, path, dedupe)
