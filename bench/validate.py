"""``uebench validate PATH...``: check a submitted results file or folder, row by row.

What a submission must be, beyond parsing as `ResultRow`s (types, ranges, no NaN):

- plain CSV and JSON only (result files and their curves); anything else, a pickle among
  them, is refused;
- every ok row carries its provenance (code version, packages, device, config hash,
  timestamp, dataset fingerprint, the cell's full spec), and none comes from a modified
  checkout (``git_commit`` ending in ``-dirty``);
- each row's ``cell_hash`` is the hash of its ``cell_spec``, and the spec agrees with the
  row's columns (attack, defense, arch, seed, training settings);
- the measured budget of the published poison is within the declared one;
- no cell appears twice in a file;
- every attack and defense is registered here, or named with the distribution and version
  it came from.

Each problem is one line, ``file:line: what``; the command exits 1 if there is any.
"""
from __future__ import annotations

import csv
import io
import json
import math
import re
from datetime import datetime
from pathlib import Path

from bench.config import canonical_json
from bench.plan import cell_key
from bench.results import ResultRow, ResultsFileError, check_header, parse_row

REQUIRED_PROVENANCE = ("git_commit", "python_version", "torch_version", "timm_version", "uebench_version", "device",
                       "config_hash", "timestamp", "dataset_fingerprint", "cell_spec")
PLAIN = {".csv", ".json"}
DERIVED = {"leaderboard.md", "leaderboard.csv"}
"""What `uebench leaderboard` writes into a scratch results folder (with its ``leaderboard/``
figures): derived from the rows, rebuilt by CI, so not part of what is validated."""
_THREAT = re.compile(r"^(linf|l2|l0|filter)=([0-9.eE+-]+)")
_DIST = re.compile(r"^[A-Za-z0-9_.-]+==[A-Za-z0-9_.+!-]+$")


def _registered(kind: str, name: str) -> bool:
    from registry import ATTACKS, DEFENSES

    return name in (ATTACKS if kind == "attack" else DEFENSES)


def check_row(row: ResultRow, where: str) -> list[str]:
    """Every problem of one parsed row (empty if none)."""
    out: list[str] = []
    if row.status == "failed":
        if not row.error:
            out.append(f"{where}: a failed row must say why (error is empty)")
        return out
    for f in REQUIRED_PROVENANCE:
        if not getattr(row, f) or getattr(row, f) == "unknown":
            out.append(f"{where}: {f}: missing provenance")
    if row.git_commit.endswith("-dirty"):
        out.append(f"{where}: git_commit {row.git_commit}: made from a modified checkout (commit first, then run)")
    if row.clean_acc_final is None or row.clean_acc_peak is None:
        out.append(f"{where}: an ok row must have clean_acc_final and clean_acc_peak")
    elif row.clean_acc_peak + 1e-6 < row.clean_acc_final:
        out.append(f"{where}: clean_acc_peak {row.clean_acc_peak} is below clean_acc_final {row.clean_acc_final}")
    try:
        datetime.fromisoformat(row.timestamp)
    except ValueError:
        out.append(f"{where}: timestamp {row.timestamp!r} is not ISO 8601")
    out += _check_budget(row, where)
    out += _check_spec(row, where)
    out += _check_plugins(row, where)
    return out


def _check_budget(row: ResultRow, where: str) -> list[str]:
    if row.threat == "none":
        return [] if not row.poison_linf else [f"{where}: poison_linf {row.poison_linf}: a clean row must not change any image"]
    m = _THREAT.match(row.threat)
    if not m:
        return [f"{where}: threat {row.threat!r} is not a declared threat model (e.g. linf=8/255)"]
    norm, budget = m.group(1), float(m.group(2))
    if row.epsilon is not None and not math.isclose(row.epsilon, budget, rel_tol=1e-6):
        return [f"{where}: epsilon {row.epsilon} differs from the threat's budget {budget}"]
    # L0 and filter budgets are checked when the poison is made (a filter's budget lives in its
    # kernels, which a row does not carry); `uebench verify` re-makes the poison to re-check them.
    measured = {"linf": row.poison_linf, "l2": row.poison_l2}.get(norm)
    if measured is None:
        return []
    slack = 1e-6 + (0.5 / 255 * math.sqrt(3 * 32 * 32) if norm == "l2" else 0.0)
    if measured > budget + slack:
        return [f"{where}: poison_{norm} {measured:g} exceeds the declared budget {row.threat}"]
    return []


def _check_spec(row: ResultRow, where: str) -> list[str]:
    if not row.cell_spec:
        return []
    if cell_key(row.cell_spec) != row.cell_hash:
        return [f"{where}: cell_hash {row.cell_hash} is not the hash of its cell_spec (the row was edited)"]
    try:
        spec = json.loads(row.cell_spec)
        poison, attack = spec["poison"], spec["poison"]["attack"]
        checks = {
            "arch": (row.arch, spec["arch"]),
            "seed": (row.seed, poison["seed"]),
            "train_config": (row.train_config, canonical_json(spec["train"])),
            "attack_name": (row.attack_name, "clean-only" if attack is None else attack["name"]),
            "attack_params": (row.attack_params, "{}" if attack is None else canonical_json(attack["params"])),
            "defense_params": (row.defense_params, canonical_json([{"name": d["name"], "params": d["params"]} for d in spec["defense"]])),
        }
    except (ValueError, KeyError, TypeError) as exc:
        return [f"{where}: cell_spec is not a cell spec ({type(exc).__name__}: {exc})"]
    return [f"{where}: {col}: {got!r} disagrees with its cell_spec ({want!r})" for col, (got, want) in checks.items() if got != want]


def _check_plugins(row: ResultRow, where: str) -> list[str]:
    try:
        plugins = json.loads(row.plugins or "{}")
        defenses = [d["name"] for d in json.loads(row.defense_params or "[]")]
    except (ValueError, KeyError, TypeError):
        return [f"{where}: plugins / defense_params are not the JSON uebench writes"]
    out = []
    for kind, name, source in [("attack", row.attack_name, plugins.get("attack", ""))] + [("defense", d, plugins.get(d, "")) for d in defenses]:
        if name == "clean-only":
            continue
        if source == "builtin" and not _registered(kind, name):
            out.append(f"{where}: {kind} {name!r} is said to be built in but is not registered here")
        elif source != "builtin" and not _DIST.match(str(source)):
            out.append(f"{where}: {kind} {name!r}: name its distribution and version in plugins (got {source!r})")
    return out


def validate_results_file(path: Path) -> list[str]:
    """Every problem of one results CSV."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        return [f"{path}: not a uebench results file (not UTF-8 text)"]
    if "\x00" in text:
        return [f"{path}: not a uebench results file (binary data)"]
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        check_header(reader.fieldnames or [], path)
    except ResultsFileError as exc:
        return [str(exc)]
    out, seen = [], {}
    try:
        for rec in reader:
            where = f"{path}:{reader.line_num}"
            try:
                row = parse_row(rec, where)
            except ResultsFileError as exc:
                out.append(str(exc))
                continue
            if row.cell_hash in seen:
                out.append(f"{where}: cell {row.cell_hash} is also on line {seen[row.cell_hash]} (a duplicate row)")
            seen[row.cell_hash] = reader.line_num
            out += check_row(row, where)
    except csv.Error as exc:
        out.append(f"{path}:{reader.line_num}: not CSV ({exc})")
    if text and not text.endswith("\n"):
        out.append(f"{path}: the last line is incomplete (a torn write)")
    return out


def validate_curve(path: Path) -> list[str]:
    try:
        rec = json.loads(path.read_bytes().decode("utf-8"), parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
    except (UnicodeDecodeError, ValueError) as exc:
        return [f"{path}: not plain JSON ({type(exc).__name__})"]
    if not isinstance(rec, dict) or not isinstance(rec.get("curve"), list) or rec.get("cell_hash") != path.stem:
        return [f"{path}: not a learning curve ({{cell_hash, curve}} of this file's cell)"]
    return []


def _submitted(rel: Path) -> bool:
    """Whether a file under a results folder is part of the submission (not a lock, a hidden
    file, or the leaderboard derived from the rows)."""
    if any(part.startswith(".") for part in rel.parts) or rel.suffix == ".lock":
        return False
    return not (rel.name in DERIVED and len(rel.parts) == 1 or rel.parts[0] == "leaderboard" and len(rel.parts) > 1)


def validate(paths: list[Path]) -> tuple[list[str], int]:
    """(problems, files checked) for files and folders (folders: every file under them)."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.is_file() and _submitted(f.relative_to(p)))
        elif p.exists():
            files.append(p)
        else:
            return [f"{p}: no such file or folder"], 0
    out: list[str] = []
    for f in files:
        if f.suffix not in PLAIN:
            head = f.read_bytes()[:2]
            kind = "a pickle" if head[:1] == b"\x80" else f"a {f.suffix or 'suffix-less'} file"
            out.append(f"{f}: {kind}; a submission holds plain CSV results and JSON curves only")
        elif f.suffix == ".csv":
            out += validate_results_file(f)
        else:
            out += validate_curve(f)
    return out, len(files)
