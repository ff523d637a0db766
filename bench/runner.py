"""Run a matrix: load data, make each poison once, train every cell on it, write rows.

Cells whose row already exists (status ok) in the results file are skipped, so rerunning
the same command after an interruption finishes the rest. A cell that raises is recorded as
failed with its one-line error and the matrix goes on; the summary counts failures.
"""
from __future__ import annotations

import difflib
import logging
import math
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from bench.attack import AttackContext, threat_of
from bench.config import Matrix, canonical_json
from bench.data import Splits, stratified_indices
from bench.defense import DefenseStack
from bench.device import device_name, resolve_device, seed_everything
from bench.perturbation import apply_perturbation
from bench.plan import Cell, PoisonTask, attack_params, config_hash, dataset_spec, defense_params, plan
from bench.provenance import git_commit, versions
from bench.results import ResultRow, ResultStore
from bench.threat import validate_poison
from registry import ATTACKS, DATASETS, DEFENSES
from registry.lazy import lazy_import

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_import("torch")

log = logging.getLogger("uebench.run")


class PreflightError(ValueError):
    """Something a run needs is missing (an arch, a dataset); one line."""


@dataclass
class Poisoned:
    """A published poison: the poisoned train split plus what the row reports about it."""

    splits: Splits
    stats: dict
    gen_seconds: float
    error: str = ""


@dataclass
class RunSummary:
    total: int
    skipped: int = 0
    ok: int = 0
    failed: int = 0
    rows: list[ResultRow] = field(default_factory=list)
    results_path: Path | None = None


def preflight(m: Matrix) -> None:
    """Checks that need heavier imports than config validation (timm): every arch exists."""
    from bench.models import list_models

    known = set(list_models())
    for arch in m.archs:
        if arch not in known:
            close = difflib.get_close_matches(arch, known, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise PreflightError(f"archs: unknown model {arch!r}{hint} (see `uebench list models`)")


def load_dataset(spec, root: Path) -> Splits:
    """Load a dataset and take its deterministic stratified subset."""
    splits = DATASETS.create(spec.name, **spec.params).load(root)
    train, test = splits.train, splits.test
    if spec.n_train is not None and spec.n_train < len(train):
        train = train.subset(stratified_indices(train.y, spec.n_train, spec.subset_seed))
    if spec.n_test is not None and spec.n_test < len(test):
        test = test.subset(stratified_indices(test.y, spec.n_test, spec.subset_seed))
    out = Splits(splits.name, train, test, dict(splits.info))
    out.info["fingerprint"] = out.fingerprint()[:16]
    return out


def make_poison(task: PoisonTask, m: Matrix, clean: Splits, device: "torch.device", on_round=None) -> Poisoned:
    """Generate, apply (ratio + fixed index set), quantize and validate one poison."""
    entry = ATTACKS.get(task.attack.name)
    attack = ATTACKS.create(task.attack.name, **task.attack.params)
    ctx = AttackContext(
        device=device,
        seed=task.seed,
        num_classes=clean.num_classes,
        img_shape=tuple(clean.train.x.shape[1:]),
        progress=on_round or (lambda *a, **k: None),
    )
    t0 = time.perf_counter()
    seed_everything(task.seed)
    pert = attack.generate(clean.train, ctx)
    gen_seconds = time.perf_counter() - t0
    mask = None
    if task.poison_ratio < 1.0:
        n_poison = max(1, round(task.poison_ratio * len(clean.train)))
        mask = torch.zeros(len(clean.train), dtype=torch.bool)
        mask[stratified_indices(clean.train.y, n_poison, task.seed)] = True
    published = apply_perturbation(clean.train, pert, m.apply, mask)
    threat = threat_of(task.attack.name)
    stats = validate_poison(task.attack.name, threat, attack.params, clean.train, published)
    budget = threat.budget(attack.params)
    return Poisoned(
        splits=Splits(clean.name, published, clean.test, clean.info),
        stats={
            "threat": threat.describe(attack.params),
            "epsilon": None if math.isinf(budget) else budget,
            "poison_linf": stats.linf,
            "poison_l2": stats.l2,
            "poison_psnr": None if math.isinf(stats.psnr) else stats.psnr,
            "attack_stats": canonical_json(pert.stats),
            "source_arch": attack.source_arch or "",
            "plugin": entry.source,
        },
        gen_seconds=gen_seconds,
    )


def run_matrix(
    m: Matrix,
    results_dir: Path,
    data_root: Path,
    device: str | None = None,
    progress: Callable[..., object] | None = None,
) -> RunSummary:
    """Run every cell of ``m`` not already in ``results_dir``; return the summary."""
    preflight(m)
    dev = resolve_device(device or m.device)
    store = ResultStore(results_dir, m.name)
    cells = plan(m)
    done = store.done()
    todo = [c for c in cells if c.key(m) not in done]
    summary = RunSummary(total=len(cells), skipped=len(cells) - len(todo), results_path=store.path)
    if not todo:
        return summary
    bar = progress("cells", len(todo)) if progress else None
    chash = config_hash(m)
    datasets: dict[str, Splits] = {}
    poisons: dict[str, Poisoned] = {}
    for cell in todo:
        dkey = canonical_json(dataset_spec(cell.poison.dataset))
        if dkey not in datasets:
            datasets.clear()
            poisons.clear()
            datasets[dkey] = load_dataset(cell.poison.dataset, data_root)
        clean = datasets[dkey]
        pkey = cell.poison.key(m)
        if pkey not in poisons:
            poisons.clear()  # cells are ordered by poison: keep one in memory
            try:
                poisons[pkey] = make_poison(cell.poison, m, clean, dev)
            except Exception as exc:  # noqa: BLE001 - recorded in the row; the matrix goes on
                log.exception("poison %s failed", cell.poison.attack.name)
                poisons[pkey] = Poisoned(clean, {}, 0.0, error=f"{type(exc).__name__}: {exc}")
        poison = poisons[pkey]
        row, curve = run_cell(cell, m, poison, dev, chash, progress)
        gen_seconds = poison.gen_seconds
        poison.gen_seconds = 0.0  # paid once: later cells on the same poison report 0
        row = row.model_copy(update={"gen_seconds": gen_seconds})
        store.append(row, curve)
        summary.rows.append(row)
        if row.status == "ok":
            summary.ok += 1
        else:
            summary.failed += 1
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return summary


def run_cell(cell: Cell, m: Matrix, poison: Poisoned, dev, chash: str, progress=None) -> tuple[ResultRow, list]:
    """Train one exploiter on one poison; a failure becomes a failed row, never an exception."""
    from bench.models import create_model
    from bench.trainer import fit

    clean = poison.splits
    base = _row_base(cell, m, poison, dev, chash)
    if poison.error:
        return ResultRow(**base, status="failed", error=poison.error), []
    try:
        stack = DefenseStack.build([(d.name, d.params) for d in cell.defense])
        seed_everything(cell.seed)
        c, h, _ = clean.train.x.shape[1:]
        model = create_model(cell.arch, num_classes=clean.num_classes, in_chans=c, img_size=h)
        bar = progress(f"{base['attack']} / {base['defense']} / {cell.arch}", m.train.epochs) if progress else None
        tick = (lambda done, total, **kw: bar.update(1)) if bar is not None else None
        res = fit(model, clean.train, clean.test, m.train, stack, seed=cell.seed, device=dev, progress=tick)
        if m.robust is not None:
            from bench.robust import evaluate_robust

            res.extra.update(evaluate_robust(model, stack.transform_test(clean.test.x.to(dev)), clean.test.y, m.robust, cell.seed))
        if bar is not None:
            bar.close()
    except Exception as exc:  # noqa: BLE001 - recorded in the row; the matrix goes on
        log.exception("cell failed")
        return ResultRow(**base, status="failed", error=f"{type(exc).__name__}: {exc}".replace("\n", " ")), []
    row = ResultRow(
        **{
            **base,
            "status": "ok",
            "epochs": res.epochs_run,
            "clean_acc_final": round(100 * res.clean_acc_final, 4),
            "clean_acc_peak": round(100 * res.clean_acc_peak, 4),
            "peak_epoch": res.peak_epoch,
            "train_acc_final": round(100 * res.train_acc_final, 4),
            "train_seconds": round(res.train_seconds, 3),
            "images_per_second": round(res.images_per_second, 1),
            "defense_cost": stack.cost,
            "defense_report": canonical_json(res.extra),
            **{k: v for k, v in res.extra.items() if k in ("robust_acc_fgsm", "robust_acc_pgd20")},
        }
    )
    return row, res.curve


def _row_base(cell: Cell, m: Matrix, poison: Poisoned, dev, chash: str) -> dict:
    v = versions()
    s = poison.stats
    ds = cell.poison.dataset
    plugins = {"attack": s.get("plugin", "builtin")}
    plugins.update({d.name: DEFENSES.get(d.name).source for d in cell.defense})
    return {
        "cell_hash": cell.key(m),
        "matrix": m.name,
        "dataset": ds.name if not ds.params else f"{ds.name}{canonical_json(ds.params)}",
        "attack": m.attack_label(cell.poison.attack),
        "attack_name": cell.poison.attack.name,
        "attack_params": canonical_json(attack_params(cell.poison.attack)),
        "defense": m.defense_label(list(cell.defense)),
        "defense_params": canonical_json(defense_params(cell.defense)),
        "arch": cell.arch,
        "source_arch": s.get("source_arch", ""),
        "poison_ratio": cell.poison.poison_ratio,
        "seed": cell.seed,
        "epochs": m.train.epochs,
        "n_train": len(poison.splits.train),
        "n_test": len(poison.splits.test),
        "clean_acc_final": None,
        "clean_acc_peak": None,
        "peak_epoch": None,
        "train_acc_final": None,
        "threat": s.get("threat", ""),
        "epsilon": s.get("epsilon"),
        "poison_linf": s.get("poison_linf"),
        "poison_l2": s.get("poison_l2"),
        "poison_psnr": s.get("poison_psnr"),
        "apply_mode": f"{m.apply.mode}/{m.apply.resolved_rounding()}",
        "attack_stats": s.get("attack_stats", "{}"),
        "defense_cost": 1.0,
        "defense_report": "{}",
        "train_config": canonical_json(m.train.model_dump(mode="json")),
        "gen_seconds": None,
        "train_seconds": None,
        "images_per_second": None,
        "device": device_name(dev),
        "dataset_fingerprint": poison.splits.info.get("fingerprint", ""),
        "python_version": v["python"],
        "torch_version": v["torch"],
        "timm_version": v["timm"],
        "uebench_version": v["uebench"],
        "plugins": canonical_json(plugins),
        "git_commit": git_commit(),
        "config_hash": chash,
        "timestamp": datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
    }
