"""Training one cell (worker side): an exploiter on a published poison, to a `ResultRow`.

`train_cell` never raises for what goes wrong inside the cell (a diverging loss, a defense
bug): it returns a failed row with the one-line error, and the matrix goes on. `failed_row`
builds the row of a cell that could not run (its poison failed, its worker died) from the
plan and the dataset's facts alone, without loading any data. Every row, ok or failed,
carries the same provenance: config hash, code version, package versions, plugin sources,
device, seed, wall times.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from bench.config import canonical_json
from bench.defense import DefenseStack
from bench.device import device_name, seed_everything
from bench.plan import CLEAN_ONLY, Cell, RunSettings, attack_params, defense_params
from bench.poison import PoisonRecord, declared_facts
from bench.provenance import git_commit, versions
from bench.records import DatasetFacts, PoisonFacts
from bench.results import ResultRow
from registry import ATTACKS, DEFENSES
from registry.lazy import lazy_import

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_import("torch")

log = logging.getLogger("uebench.cell")


def one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".replace("\n", " ")


def _plugins(cell: Cell) -> dict:
    """Where each plugin of the cell came from (builtin, or distribution==version)."""
    out = {"attack": "builtin" if cell.poison.clean_only else ATTACKS.get(cell.poison.attack.name).source}
    out.update({d.name: DEFENSES.get(d.name).source for d in cell.defense})
    return out


def row_base(cell: Cell, s: RunSettings, data: DatasetFacts, poison: PoisonFacts, device: str, n_train: int) -> dict:
    """Every field of the cell's row that does not come from training."""
    v = versions()
    task, ds = cell.poison, cell.poison.dataset
    return {
        "cell_hash": cell.key,
        "matrix": s.matrix,
        "dataset": ds.name if not ds.params else f"{ds.name}{canonical_json(ds.params)}",
        "attack": task.label,
        "attack_name": task.attack_name,
        "attack_params": "{}" if task.clean_only else canonical_json(attack_params(task.attack)),
        "defense": cell.defense_label,
        "defense_params": canonical_json(defense_params(cell.defense)),
        "arch": cell.arch,
        "source_arch": poison.source_arch,
        "poison_ratio": poison.poison_ratio,
        "seed": cell.seed,
        "epochs": s.train.epochs,
        "n_train": n_train,
        "n_test": data.n_test,
        "clean_acc_final": None,
        "clean_acc_peak": None,
        "peak_epoch": None,
        "train_acc_final": None,
        "threat": poison.threat,
        "epsilon": poison.epsilon,
        "poison_linf": poison.linf,
        "poison_l2": poison.l2,
        "poison_psnr": poison.psnr,
        "apply_mode": f"{s.apply.mode}/{s.apply.resolved_rounding()}",
        "attack_stats": poison.attack_stats,
        "defense_cost": 1.0,
        "defense_report": "{}",
        "train_config": canonical_json(s.train.model_dump(mode="json")),
        "gen_seconds": None,
        "train_seconds": None,
        "images_per_second": None,
        "device": device,
        "dataset_fingerprint": data.fingerprint[:16],
        "python_version": v["python"],
        "torch_version": v["torch"],
        "timm_version": v["timm"],
        "uebench_version": v["uebench"],
        "plugins": canonical_json(_plugins(cell)),
        "git_commit": git_commit(),
        "config_hash": s.config_hash,
        "timestamp": datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
        "num_classes": len(data.classes),
        "cell_spec": cell.spec,
    }


def failed_row(cell: Cell, s: RunSettings, data: DatasetFacts, error: str, device: str) -> ResultRow:
    """The row of a cell that could not run: built from the plan and the dataset's facts."""
    poison = declared_facts(cell.poison)
    base = row_base(cell, s, data, poison, device, data.n_train)
    base["gen_seconds"] = 0.0
    return ResultRow(**base, status="failed", error=error.replace("\n", " "))


def train_cell(
    cell: Cell,
    s: RunSettings,
    data: DatasetFacts,
    poison: PoisonRecord,
    dev: "torch.device",
    gen_seconds: float = 0.0,
    progress: Callable | None = None,
) -> tuple[ResultRow, list]:
    """Train one exploiter on one poison; a failure becomes a failed row, never an exception."""
    from bench.models import create_model
    from bench.trainer import accuracy, fit

    splits = poison.splits
    base = row_base(cell, s, data, poison.facts, device_name(dev), len(splits.train))
    base["gen_seconds"] = round(gen_seconds, 3)
    bar = None
    try:
        stack = DefenseStack.build([(d.name, d.params) for d in cell.defense])
        seed_everything(cell.seed)
        c, h, _ = splits.train.x.shape[1:]
        model = create_model(cell.arch, num_classes=splits.num_classes, in_chans=c, img_size=h)
        bar = progress(f"{base['attack']} / {base['defense']} / {cell.arch}", s.train.epochs) if progress else None
        tick = (lambda done, total, **kw: bar.update(1)) if bar is not None else None
        res = fit(model, splits.train, splits.test, s.train, stack, seed=cell.seed, device=dev, progress=tick, holdout=splits.holdout)
        x_test = stack.transform_test(splits.test.x.to(dev, copy=True))
        if cell.poison.poison_classes:
            ids = torch.tensor([splits.test.classes.index(c) for c in cell.poison.poison_classes])
            hit = torch.isin(splits.test.y.cpu(), ids)
            for name, sel in (("acc_poisoned_classes", hit), ("acc_other_classes", ~hit)):
                idx = torch.nonzero(sel).flatten()
                if len(idx):
                    res.extra[name] = round(100 * accuracy(model, x_test[idx.to(x_test.device)], splits.test.y[idx]), 4)
        if s.robust is not None:
            from bench.robust import evaluate_robust

            res.extra.update(evaluate_robust(model, x_test, splits.test.y, s.robust, cell.seed))
    except Exception as exc:
        log.exception("cell failed")
        return ResultRow(**base, status="failed", error=one_line(exc)), []
    finally:
        if bar is not None:
            bar.close()
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


__all__ = ["CLEAN_ONLY", "failed_row", "one_line", "row_base", "train_cell"]
