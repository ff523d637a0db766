"""``uebench verify PATH [--cells K] [--seed S]``: re-run cells of a submitted results file and
compare the numbers, RobustBench's clean-accuracy re-check made one command.

K ok rows are drawn (seeded) from the file; each is rebuilt from what the row itself records
(its ``cell_spec``: dataset and subset, attack and params, defenses, arch, seed, training
and evaluation settings; the plugin versions it names must be the installed ones) and run
through the same poison and cell code as ``uebench run``, with a fresh cache unless one is
given (so the poison is remade too) and the row's CPU thread counts: the poison's own (a
cached poison may have been made by another run with other threads) and the exploiter's.
On a CPU of the same type (`bench.device.cpu_type`: kernel family and model) with the same
seed and threads the numbers must match exactly (``--tolerance 0``, the default). Another
CPU type computes other last bits, and training amplifies them to seed-sized gaps (one
5,000-image cell: 63.8 % recorded, 61.7 % re-run), so each check then carries a note saying
so, and the comparison needs a tolerance. GPU kernels are not deterministic run to run
either: a GPU re-check states its tolerance (about a point of accuracy for a 60-epoch
ResNet-18 run)."""
from __future__ import annotations

import json
import random
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench.config import AttackSpec, DatasetSpec, DefenseSpec
from bench.device import cpu_type, parse_cpu_device
from bench.perturbation import ApplyConfig
from bench.plan import Cell, PoisonTask, RunSettings, cell_key
from bench.results import ResultRow, read_rows
from bench.train_config import RobustEvalConfig, TrainConfig

COMPARED = ("clean_acc_final", "clean_acc_peak", "peak_epoch", "train_acc_final", "robust_acc_fgsm", "robust_acc_pgd20")


class SubmissionError(ValueError):
    """A row cannot be re-run from what it records (no spec, another plugin version); one line."""


@dataclass
class Check:
    row: ResultRow
    rerun: ResultRow | None
    differences: dict[str, tuple]  # column -> (recorded, re-run)
    error: str = ""
    note: str = ""  # why an exact match is not to be expected here (another CPU type)

    @property
    def ok(self) -> bool:
        return not self.error and not self.differences


def rebuild(row: ResultRow, device: str = "cpu") -> tuple[Cell, RunSettings]:
    """The cell and settings a row was made from (from its ``cell_spec``)."""
    from registry import ATTACKS, DEFENSES, RegistryError

    if not row.cell_spec or cell_key(row.cell_spec) != row.cell_hash:
        raise SubmissionError(f"row {row.cell_hash}: its cell_spec is missing or does not hash to its cell_hash")
    spec = json.loads(row.cell_spec)
    p = spec["poison"]
    try:
        for kind, reg, entry in [("attack", ATTACKS, p["attack"])] + [("defense", DEFENSES, d) for d in spec["defense"]]:
            if entry is None:
                continue
            installed = reg.get(entry["name"]).version
            if entry.get("version", "1") != installed:
                raise SubmissionError(f"row {row.cell_hash}: {kind} {entry['name']!r} was version {entry.get('version', '1')}, "
                                      f"version {installed} is installed: the numbers are not comparable")
    except RegistryError as exc:
        raise SubmissionError(f"row {row.cell_hash}: {exc}") from None
    d = p["dataset"]
    task = PoisonTask(
        dataset=DatasetSpec(name=d["name"], params=d["params"], n_train=d["n_train"], n_test=d["n_test"], subset_seed=d["subset_seed"],
                            holdout=d.get("holdout", 0)),
        attack=None if p["attack"] is None else AttackSpec(name=p["attack"]["name"], params=p["attack"]["params"]),
        seed=p["seed"], poison_ratio=p["poison_ratio"], poison_classes=tuple(p.get("poison_classes", ())),
        key="rebuilt", label=row.attack,
    )
    cell = Cell(poison=task, defense=tuple(DefenseSpec(name=x["name"], params=x["params"]) for x in spec["defense"]),
                arch=spec["arch"], key=row.cell_hash, defense_label=row.defense, spec=row.cell_spec)
    settings = RunSettings(
        matrix=row.matrix, config_hash=row.config_hash, train=TrainConfig(**spec["train"]), apply=ApplyConfig(**p["apply"]),
        robust=None if spec["robust"] is None else RobustEvalConfig(**spec["robust"]), device=device,
    )
    return cell, settings


def rerun(row: ResultRow, data_root: Path, cache_dir: Path, device: str = "cpu") -> ResultRow:
    import torch

    from bench.cache import Cache
    from bench.cell import train_cell
    from bench.device import prepare_device
    from bench.plan import dataset_key
    from bench.poison import facts_of, load_dataset, make_poison

    cell, settings = rebuild(row, device)
    old = torch.get_num_threads()

    def pin(recorded: str | None) -> None:
        """CPU convolutions can depend on the thread count: use the one the row recorded."""
        cpu = parse_cpu_device(recorded)
        if cpu and device == "cpu":
            torch.set_num_threads(cpu[0])

    try:
        dev = prepare_device(device)
        clean = load_dataset(cell.poison.dataset, data_root)
        pin(poison_device(row) or row.device)  # the poison may have been made by another run, on other threads
        record = make_poison(cell.poison, settings.apply, clean, Cache(cache_dir), dev)
        pin(row.device)
        new, _ = train_cell(cell, settings, facts_of(dataset_key(cell.poison.dataset), clean), record, dev)
    finally:
        torch.set_num_threads(old)
    return new


def poison_device(row: ResultRow) -> str | None:
    """Where the row's poison was made (``attack_stats.poison.device``; None in rows from
    before it was recorded, whose poison is taken to come from the row's own device)."""
    try:
        got = json.loads(row.attack_stats or "{}").get("poison", {}).get("device")
    except (ValueError, AttributeError):
        return None
    return got if isinstance(got, str) else None


def cpu_note(row: ResultRow, device: str) -> str:
    """Why a CPU re-run of ``row`` here need not match it bit for bit, or "" if it should: the
    row (or its poison) ran on another CPU type, or does not say which. Only the same CPU type
    and thread counts reproduce a CPU run exactly (`bench.device.cpu_type`)."""
    if device != "cpu":
        return ""
    here = cpu_type()
    for what, recorded in (("its exploiter", row.device), ("its poison", poison_device(row) or row.device)):
        cpu = parse_cpu_device(recorded)
        if cpu is None:
            return f"{what} ran on {recorded!r}, not a CPU: pass a --tolerance"
        if cpu[1] != here:
            where = f"on another CPU type ({cpu[1]})" if cpu[1] else "on a CPU whose type the row does not record"
            return (f"{what} ran {where}, this is {here}: floats differ across CPU types and training amplifies "
                    "them to seed-sized gaps, so only a --tolerance comparison is meaningful here")
    return ""


def verify(path: Path, cells: int, seed: int, data_root: Path, cache_dir: Path | None = None, device: str = "cpu",
           tolerance: float = 0.0) -> list[Check]:
    rows = [r for r in read_rows(path) if r.status == "ok"]
    if not rows:
        raise SubmissionError(f"{path}: no ok rows to verify")
    picked = sorted(random.Random(seed).sample(rows, min(cells, len(rows))), key=lambda r: r.cell_hash)
    out = []
    with tempfile.TemporaryDirectory(prefix="uebench-verify-") as tmp:
        for row in picked:
            try:
                new = rerun(row, data_root, Path(cache_dir) if cache_dir else Path(tmp), device)
            except SubmissionError as exc:
                out.append(Check(row, None, {}, str(exc)))
                continue
            if new.status != "ok":
                out.append(Check(row, new, {}, f"the re-run failed: {new.error}"))
                continue
            note = cpu_note(row, device)
            diffs = {}
            for col in COMPARED:
                a, b = getattr(row, col), getattr(new, col)
                if (a is None) != (b is None) or (a is not None and abs(a - b) > tolerance):
                    diffs[col] = (a, b)
            out.append(Check(row, new, diffs, note=note))
    return out
