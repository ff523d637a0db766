"""Result rows: one pydantic model defines the CSV columns, their meaning and their check.

`ResultRow` is the single source of truth: the CSV header is its field order, the README's
column table is generated from its descriptions (`schema_markdown`), and a submitted CSV is
validated by parsing each line back into it. Rows are written atomically: the file is
rewritten to a temporary file and renamed over the old one under a lock, so a crash never
leaves a torn line behind.
"""
from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Literal

from filelock import FileLock
from pydantic import BaseModel, ConfigDict, Field

DEFAULT_RESULTS_DIR = Path("results")


def _f(desc: str, **kw):
    return Field(description=desc, **kw)


class ResultRow(BaseModel):
    """One cell of a benchmark matrix: a poison, a defense stack, an architecture, a seed."""

    model_config = ConfigDict(extra="forbid")

    cell_hash: str = _f("sha256[:16] of everything that determines the cell's number (resume key)")
    status: Literal["ok", "failed"] = _f("ok, or failed (see error)")
    matrix: str = _f("name of the matrix config that produced the row")
    dataset: str = _f("dataset name (with params, if any)")
    attack: str = _f("attack label as shown on the leaderboard")
    attack_name: str = _f("registered attack name")
    attack_params: str = _f("attack params, canonical JSON (defaults filled in)")
    defense: str = _f("defense stack label (`+`-joined)")
    defense_params: str = _f("defense stack, canonical JSON list of {name, params}")
    arch: str = _f("exploiter architecture (timm name)")
    source_arch: str = _f("model the poison was optimized on ('' for training-free attacks)")
    poison_ratio: float = _f("fraction of the training set poisoned")
    seed: int = _f("seed of poison generation and training")
    epochs: int = _f("training epochs run (all stages)")
    n_train: int = _f("training images")
    n_test: int = _f("clean test images")
    clean_acc_final: float | None = _f("clean test accuracy (%) after the last epoch — the score")
    clean_acc_peak: float | None = _f("best clean test accuracy (%) over the evaluated epochs")
    peak_epoch: int | None = _f("epoch of the peak (0-based)")
    train_acc_final: float | None = _f("accuracy (%) on the (poisoned, augmented) train batches, last epoch")
    robust_acc_fgsm: float | None = _f("FGSM (8/255) accuracy (%) on the clean test set, if measured", default=None)
    robust_acc_pgd20: float | None = _f("PGD-20 (8/255) accuracy (%) on the clean test set, if measured", default=None)
    threat: str = _f("declared threat model and budget, e.g. linf=8/255")
    epsilon: float | None = _f("declared budget (L∞ in /255; L2 on [0,1]; L0 in pixels)")
    poison_linf: float | None = _f("measured max |x'-x| of the published uint8 images, /255 units")
    poison_l2: float | None = _f("measured max per-image L2 of x'-x on the [0,1] scale")
    poison_psnr: float | None = _f("mean PSNR (dB) of poisoned vs clean images")
    apply_mode: str = _f("how δ was published: signed|rectified and the rounding")
    attack_stats: str = _f("the attack's own bookkeeping (rounds, source accuracy), JSON")
    defense_cost: float = _f("declared forward+backward passes per step relative to standard training")
    defense_report: str = _f("the defense's own bookkeeping (rollbacks, …), JSON")
    train_config: str = _f("training settings, canonical JSON")
    gen_seconds: float | None = _f("wall time to generate the poison (0 when cached)")
    train_seconds: float | None = _f("wall time of the training loop (excluding evaluation)")
    images_per_second: float | None = _f("training throughput")
    device: str = _f("device the cell trained on")
    dataset_fingerprint: str = _f("sha256[:16] of the dataset's train and test arrays")
    python_version: str = _f("Python version")
    torch_version: str = _f("torch version")
    timm_version: str = _f("timm version")
    uebench_version: str = _f("uebench version")
    plugins: str = _f("where each plugin came from (builtin or distribution==version), JSON")
    git_commit: str = _f("uebench checkout HEAD (-dirty if modified)")
    config_hash: str = _f("sha256[:16] of the whole validated matrix config")
    timestamp: str = _f("UTC time the row was written (ISO 8601)")
    error: str = _f("one-line error of a failed cell", default="")

    @classmethod
    def columns(cls) -> list[str]:
        return list(cls.model_fields)


def schema_markdown() -> str:
    """The README's column table, generated from the model."""
    lines = ["| column | meaning |", "|---|---|"]
    for name, f in ResultRow.model_fields.items():
        desc = (f.description or "").replace("|", "\\|")
        lines.append(f"| `{name}` | {desc} |")
    return "\n".join(lines)


def _cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(round(v, 6))
    return str(v)


def read_rows(path: Path) -> list[ResultRow]:
    """Parse a results CSV back into rows, validating each; empty optional cells become None."""
    nullable = {n for n, f in ResultRow.model_fields.items() if "None" in str(f.annotation)}
    with open(path, newline="") as fh:
        return [
            ResultRow.model_validate({k: (None if v == "" and k in nullable else v) for k, v in rec.items()})
            for rec in csv.DictReader(fh)
        ]


class ResultStore:
    """The rows of one matrix in ``<dir>/<matrix>.csv`` and curves in ``<dir>/curves/``."""

    def __init__(self, directory: Path, matrix: str):
        self.dir = Path(directory)
        self.path = self.dir / f"{matrix}.csv"
        self.curves = self.dir / "curves"
        self.lock = FileLock(str(self.path) + ".lock")

    def rows(self) -> list[ResultRow]:
        return read_rows(self.path) if self.path.exists() else []

    def append(self, row: ResultRow, curve: list[dict] | None = None) -> None:
        """Add ``row`` (replacing an earlier row of the same cell), atomically."""
        self.dir.mkdir(parents=True, exist_ok=True)
        if curve is not None:
            self.curves.mkdir(parents=True, exist_ok=True)
            atomic_write(self.curves / f"{row.cell_hash}.json", json.dumps({"cell_hash": row.cell_hash, "curve": curve}, indent=1))
        with self.lock:
            self._write([r for r in self.rows() if r.cell_hash != row.cell_hash] + [row])

    def prune(self, keep: set[str]) -> list[ResultRow]:
        """Drop the rows (and curves) of cells not in ``keep``, atomically; return them.

        Why: a config edited after a run leaves rows of cells it no longer has; they are
        results of another experiment and should not be published under this matrix."""
        with self.lock:
            rows = self.rows()
            gone = [r for r in rows if r.cell_hash not in keep]
            if gone:
                self._write([r for r in rows if r.cell_hash in keep])
        # a cell's hash does not depend on the matrix, so another matrix may share the curve
        used = {r.cell_hash for other in self.dir.glob("*.csv") for r in read_rows(other)}
        for r in gone:
            if r.cell_hash not in used:
                (self.curves / f"{r.cell_hash}.json").unlink(missing_ok=True)
        return gone

    def _write(self, rows: list[ResultRow]) -> None:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(ResultRow.columns())
        for r in rows:
            w.writerow([_cell(getattr(r, c)) for c in ResultRow.columns()])
        atomic_write(self.path, buf.getvalue())


def _read_umask() -> int:
    """The process umask. Reading it means setting it, so this runs once, at import (before
    any worker thread could create a file in the moment it is 0)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically; see `atomic_write_bytes`."""
    atomic_write_bytes(path, text.encode())


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder, fsync and rename,
    so a reader never sees half a file and a crash leaves the old one intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp makes the file private (0600); a result is as readable as any file written here
        os.fchmod(fd, path.stat().st_mode & 0o7777 if path.exists() else 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
