"""Result rows: one pydantic model defines the CSV columns, their meaning and their check.

`ResultRow` is the single source of truth: the CSV header is its field order, the results
schema in ``docs/results-schema.md`` is generated from its descriptions (`schema_markdown`),
and every row read back is validated against it (types, ranges, finiteness). A file that is
not a results file, or a row that does not parse, is refused with one line naming the file,
the line and the field (`ResultsFileError`), never a traceback. Writing is `bench.store`'s.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bench.atomic import atomic_write, atomic_write_bytes  # noqa: F401 - re-exported for callers

DEFAULT_RESULTS_DIR = Path("results")
"""What the project publishes. Scratch runs go to ``runs/<matrix>/`` unless told otherwise."""

HEX16 = r"^[0-9a-f]{16}$"
_ACC = dict(ge=0, le=100)


def _f(desc: str, **kw):
    return Field(description=desc, **kw)


class ResultsFileError(ValueError):
    """A results file, or one of its rows, is malformed; the message is one line with file and line."""


class NotAResultsFile(ResultsFileError):
    """A file that is not a uebench results file at all (binary, foreign CSV, empty)."""


class ResultRow(BaseModel):
    """One cell of a benchmark matrix: a poison, a defense stack, an architecture, a seed."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    cell_hash: str = _f("sha256[:16] of everything that determines the cell's number (resume key)", pattern=HEX16)
    status: Literal["ok", "failed"] = _f("ok, or failed (see error)")
    matrix: str = _f("name of the matrix config that produced the row", min_length=1)
    dataset: str = _f("dataset name (with params, if any)", min_length=1)
    attack: str = _f("attack label as shown on the leaderboard", min_length=1)
    attack_name: str = _f("registered attack name", min_length=1)
    attack_params: str = _f("attack params, canonical JSON (defaults filled in)")
    defense: str = _f("defense stack label (`+`-joined)", min_length=1)
    defense_params: str = _f("defense stack, canonical JSON list of {name, params}")
    arch: str = _f("exploiter architecture (timm name)", min_length=1)
    source_arch: str = _f("model the poison was optimized on ('' for training-free attacks)")
    poison_ratio: float = _f("fraction of the training set poisoned", ge=0, le=1)
    seed: int = _f("seed of poison generation and training", ge=0)
    epochs: int = _f("training epochs run (all stages)", ge=0)
    n_train: int = _f("training images", ge=0)
    n_test: int = _f("clean test images", ge=0)
    clean_acc_final: float | None = _f("clean test accuracy (%) after the last epoch — the score", **_ACC)
    clean_acc_peak: float | None = _f("best clean test accuracy (%) over the evaluated epochs", **_ACC)
    peak_epoch: int | None = _f("epoch of the peak (0-based)", ge=0)
    train_acc_final: float | None = _f("accuracy (%) on the (poisoned, augmented) train batches, last epoch", **_ACC)
    robust_acc_fgsm: float | None = _f("FGSM (8/255) accuracy (%) on the clean test set, if measured", default=None, **_ACC)
    robust_acc_pgd20: float | None = _f("PGD-20 (8/255) accuracy (%) on the clean test set, if measured", default=None, **_ACC)
    threat: str = _f("declared threat model and budget, e.g. linf=8/255")
    epsilon: float | None = _f("declared budget (L∞ in /255; L2 on [0,1]; L0 in pixels)", ge=0)
    poison_linf: float | None = _f("measured max |x'-x| of the published uint8 images, /255 units", ge=0, le=255)
    poison_l2: float | None = _f("measured max per-image L2 of x'-x on the [0,1] scale", ge=0)
    poison_psnr: float | None = _f("mean PSNR (dB) of poisoned vs clean images", ge=0)
    apply_mode: str = _f("how δ was published: signed|rectified and the rounding")
    attack_stats: str = _f("the attack's own bookkeeping (rounds, source accuracy), JSON")
    defense_cost: float = _f("declared forward+backward passes per step relative to standard training", ge=0)
    defense_report: str = _f("the defense's own bookkeeping (rollbacks, …), JSON")
    train_config: str = _f("training settings, canonical JSON")
    gen_seconds: float | None = _f("wall time to generate the poison (0 when cached)", ge=0)
    train_seconds: float | None = _f("wall time of the training loop (excluding evaluation)", ge=0)
    images_per_second: float | None = _f("training throughput", ge=0)
    device: str = _f("device the cell trained on: `cuda:<GPU name>`, or `cpu:<threads>t (<capability>, <model>)`, "
                     "e.g. `cpu:1t (AVX2, AMD EPYC)` (rows from before the CPU type was recorded: `cpu:1t`)")
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
    num_classes: int | None = _f("classes of the dataset (chance accuracy is 100 / num_classes)", default=None, ge=1)
    cell_spec: str = _f("canonical JSON of the cell's full spec; cell_hash is its sha256[:16] (re-check and re-run from it)", default="")

    @classmethod
    def columns(cls) -> list[str]:
        return list(cls.model_fields)


NULLABLE = frozenset(n for n, f in ResultRow.model_fields.items() if "None" in str(f.annotation))
REQUIRED = frozenset(n for n, f in ResultRow.model_fields.items() if f.is_required())


def schema_markdown() -> str:
    """The results schema table (``docs/results-schema.md``), generated from the model."""
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


def encode(row: ResultRow) -> str:
    """One CSV line (with its newline) for ``row``, columns in `ResultRow.columns` order."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow([_cell(getattr(row, c)) for c in ResultRow.columns()])
    return buf.getvalue()


def header_line() -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(ResultRow.columns())
    return buf.getvalue()


def render(rows: list[ResultRow]) -> str:
    """A whole results file: the header, then one line per row."""
    return header_line() + "".join(encode(r) for r in rows)


def parse_row(rec: dict, where: str) -> ResultRow:
    """One CSV record as a `ResultRow`; ``where`` (``file:line``) prefixes the one-line error."""
    extra = rec.pop(None, None) or []
    if extra or any(v is None for v in rec.values()):
        n = sum(v is not None for v in rec.values()) + len(extra)
        raise ResultsFileError(f"{where}: {n} values for {len(rec)} columns (a torn or misaligned line)")
    try:
        return ResultRow.model_validate({k: (None if v == "" and k in NULLABLE else v) for k, v in rec.items()})
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "row"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        got = "" if err["type"] == "missing" else f" (got {str(err.get('input'))[:40]!r})"
        raise ResultsFileError(f"{where}: {field}: {err['msg']}{got}{more}") from None


def read_rows(path: Path, dedupe: bool = True) -> list[ResultRow]:
    """The rows of a results CSV, each validated; with ``dedupe`` the last row of each cell
    wins (a retried cell is appended after its failed row). Raises `ResultsFileError`."""
    path = Path(path)
    if not path.is_file():
        raise ResultsFileError(f"{path}: not a file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ResultsFileError(f"{path}: unreadable ({exc.strerror or exc})") from None
    return parse_csv(data, path, dedupe)


def parse_csv(data: bytes, path: Path | str, dedupe: bool = True) -> list[ResultRow]:
    """Rows of the bytes of a results file (see `read_rows`); ``path`` names it in errors."""
    if data and not data.endswith(b"\n") and b"\x00" not in data:
        lines = data.count(b"\n") + 1
        raise ResultsFileError(f"{path}:{lines}: the last line is incomplete (a torn write); rerunning its matrix repairs the file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise NotAResultsFile(f"{path}: not a uebench results file (not UTF-8 text)") from None
    if "\x00" in text:
        raise NotAResultsFile(f"{path}: not a uebench results file (binary data)")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        check_header(reader.fieldnames or [], path)
        out: dict[str, ResultRow] | list[ResultRow] = {} if dedupe else []
        for rec in reader:
            row = parse_row(rec, f"{path}:{reader.line_num}")
            if isinstance(out, dict):
                out.pop(row.cell_hash, None)
                out[row.cell_hash] = row
            else:
                out.append(row)
    except csv.Error as exc:
        raise NotAResultsFile(f"{path}:{reader.line_num}: not CSV ({exc})") from None
    return list(out.values()) if isinstance(out, dict) else out


def check_header(header: list[str], path: Path | str) -> None:
    """A results file's header: known columns only, every required one present."""
    if not header:
        raise NotAResultsFile(f"{path}: empty file, not a uebench results file")
    known = set(ResultRow.model_fields)
    unknown = [h for h in header if h not in known]
    missing = sorted(REQUIRED - set(header))
    if unknown and len(unknown) > len(header) // 2:
        raise NotAResultsFile(f"{path}:1: not a uebench results file (header starts {','.join(header[:3])!r})")
    if unknown:
        raise ResultsFileError(f"{path}:1: unknown column(s) {', '.join(unknown[:5])}")
    if missing:
        raise ResultsFileError(f"{path}:1: missing column(s) {', '.join(missing[:5])}" + (" …" if len(missing) > 5 else ""))
    if len(set(header)) != len(header):
        raise ResultsFileError(f"{path}:1: duplicate column names")


def results_files(folder: Path) -> list[Path]:
    """The ``*.csv`` files directly in ``folder`` (a folder named ``x.csv`` is not one)."""
    return sorted(p for p in Path(folder).glob("*.csv") if p.is_file())
