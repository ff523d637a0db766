"""The scheduler: run a matrix as a DAG of poison tasks and train cells, computing nothing twice.

* **Plan** (`bench.plan`): poison tasks, and the cells that train on each.
* **Cache** (`bench.cache`): a poison task generates its perturbation δ (and its
  poisoned-index set) once into the content-addressed cache; every later run, process or
  node reads it back. The published uint8 images are derived (apply + validate is cheap).
* **Resume**: a cell whose row exists in ``<results-dir>/<matrix>.csv`` is skipped; a cell
  that failed is skipped and reported unless ``retry_failed``. Rows are written atomically
  by this process only (workers return them), so a kill never leaves a torn or duplicate row.
* **Claims**: before training a cell, the scheduler takes a non-blocking lock on it in the
  results folder; concurrent runs on one results folder therefore split the cells instead of
  training each twice, and a cell claimed elsewhere is re-checked once its lock frees.
* **Executors** (`bench.executors`): where tasks run; tasks get JSON jobs, never tensors.
* **Failures**: a poison or cell that raises is recorded as a failed row with its one-line
  error; the rest of the matrix goes on.

Task functions (`poison_task`, `train_task`) run in any process: they rebuild what they need
from the job (matrix, folders) and keep the last dataset and poison in memory.
"""
from __future__ import annotations

import difflib
import logging
import math
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from filelock import FileLock, Timeout

from bench.attack import AttackContext, threat_of
from bench.cache import Cache, resolve_cache_dir
from bench.config import Matrix, canonical_json, parse_matrix
from bench.data import ImageData, Splits, stratified_indices
from bench.defense import DefenseStack
from bench.device import device_name, prepare_device, resolve_device, seed_everything
from bench.perturbation import Perturbation, apply_perturbation
from bench.plan import CLEAN_ONLY, Cell, PoisonTask, attack_params, config_hash, dataset_spec, defense_params, plan
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

PERTURBATION, INDEX = "perturbation", "index"
"""Cache kinds: an attack's δ (+ its stats), and a poisoned-index set."""


class PreflightError(ValueError):
    """Something a run needs is missing (an arch, a dataset, a class name); one line."""


@dataclass
class Poisoned:
    """A published poison: the training split as published plus what the row reports about it."""

    splits: Splits
    stats: dict
    gen_seconds: float
    error: str = ""
    generated: int = 0  # perturbations this process generated to make it


@dataclass
class RunSummary:
    total: int
    skipped: int = 0  # cells with an ok row before the run
    ok: int = 0
    failed: int = 0
    skipped_failed: list[ResultRow] = field(default_factory=list)  # failed earlier, not retried
    elsewhere: int = 0  # finished meanwhile by a concurrent run
    poisons_needed: int = 0
    poisons_generated: int = 0
    poisons_cached: int = 0
    poisons_failed: int = 0
    seconds: float = 0.0
    executor: str = ""
    rows: list[ResultRow] = field(default_factory=list)
    results_path: Path | None = None

    @property
    def trained(self) -> int:
        """Cells this run computed (ok or failed in training)."""
        return self.ok + self.failed


@dataclass
class PlanStatus:
    """What a run would do: the dry-run report."""

    cells: list[Cell]
    done: list[Cell]
    failed: list[Cell]  # failed earlier and skipped (empty with retry_failed)
    todo: list[Cell]
    poisons: list[PoisonTask]  # needed by the cells to do, one per perturbation key
    cached: list[PoisonTask]
    to_generate: list[PoisonTask]


# -- preparation --------------------------------------------------------------------------
def preflight(m: Matrix) -> None:
    """Checks that need heavier imports than config validation (timm): every arch exists."""
    from bench.models import list_models

    known = set(list_models())
    for where, archs in (("archs", m.archs), ("source_archs", m.source_archs or [])):
        for arch in archs:
            if arch not in known:
                close = difflib.get_close_matches(arch, known, n=3)
                hint = f"; did you mean {', '.join(close)}?" if close else ""
                raise PreflightError(f"{where}: unknown model {arch!r}{hint} (see `uebench list models`)")


def load_dataset(spec, root: Path) -> Splits:
    """Load a dataset and take its deterministic stratified subset."""
    splits = DATASETS.create(spec.name, **spec.params).load(root)
    train, test = splits.train, splits.test
    if spec.n_train is not None and spec.n_train < len(train):
        train = train.subset(stratified_indices(train.y, spec.n_train, spec.subset_seed))
    if spec.n_test is not None and spec.n_test < len(test):
        test = test.subset(stratified_indices(test.y, spec.n_test, spec.subset_seed))
    out = Splits(splits.name, train, test, dict(splits.info))
    out.info["sha256"] = out.fingerprint()
    out.info["fingerprint"] = out.info["sha256"][:16]
    return out


def _fingerprint(clean: Splits) -> str:
    """The dataset's full fingerprint (computed once by `load_dataset`)."""
    return clean.info.get("sha256") or clean.fingerprint()


def check_classes(m: Matrix, clean: Splits) -> None:
    """``poison_classes`` must name classes of every dataset."""
    for name in m.poison_classes or ():
        if name not in clean.train.classes:
            close = difflib.get_close_matches(name, clean.train.classes, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise PreflightError(
                f"poison_classes: {name!r} is not a class of {clean.name}{hint} (classes: {', '.join(clean.train.classes)})"
            )


# -- making a poison ----------------------------------------------------------------------
def poisoned_index(task: PoisonTask, train: ImageData) -> "torch.Tensor":
    """The fixed poisoned-index set: a seeded stratified ``poison_ratio`` share of the
    eligible images (all, or those of ``poison_classes``), sorted."""
    y = train.y.cpu()
    if task.poison_classes:
        ids = torch.tensor([train.classes.index(c) for c in task.poison_classes])
        eligible = torch.nonzero(torch.isin(y, ids)).flatten()
    else:
        eligible = torch.arange(len(y))
    n = max(1, round(task.poison_ratio * len(eligible)))
    return eligible[stratified_indices(y[eligible], n, task.seed)]


def _generate(task: PoisonTask, clean: Splits, device, on_round=None) -> tuple[dict, dict]:
    """Run the attack: (tensors, meta) for the cache."""
    attack = ATTACKS.create(task.attack.name, **task.attack.params)
    ctx = AttackContext(
        device=device,
        seed=task.seed,
        num_classes=clean.num_classes,
        img_shape=tuple(clean.train.x.shape[1:]),
        progress=on_round or (lambda *a, **k: None),
    )
    seed_everything(task.seed)
    pert = attack.generate(clean.train, ctx)
    meta = {
        "mode": pert.mode,
        "stats": _jsonable(pert.stats),
        "attack": task.attack.name,
        "params": attack_params(task.attack),
        "source_arch": attack.source_arch or "",
        "dataset": clean.name,
        "n_train": len(clean.train),
        "device": device_name(device),
    }
    return {"delta": pert.delta.float()}, meta


def materialize(task: PoisonTask, m: Matrix, clean: Splits, cache: Cache | None, device, on_round=None) -> Poisoned:
    """Publish one poison: δ and the index set from the cache (made once if missing), then
    apply (ratio / classes via the fixed index set), quantize and validate."""
    fp = _fingerprint(clean)
    generated, gen_seconds = 0, 0.0
    mask, index_key = None, None
    if task.partial:
        spec = task.index_spec(fp)
        make_index = lambda: ({"index": poisoned_index(task, clean.train)}, {"n_train": len(clean.train)})  # noqa: E731
        if cache is None:
            index = make_index()[0]["index"]
        else:
            entry, _ = cache.get_or_create(INDEX, spec, make_index)
            index, index_key = entry.tensors["index"], entry.key
        mask = torch.zeros(len(clean.train), dtype=torch.bool)
        mask[index] = True
    n_poisoned = len(clean.train) if mask is None else int(mask.sum())
    ratio = task.poison_ratio if not task.poison_classes else round(n_poisoned / len(clean.train), 6)
    poison_info = {"index": index_key[:16] if index_key else None, "n_poisoned": n_poisoned, "poison_ratio": ratio}

    if task.clean_only:
        published = clean.train.subset(torch.nonzero(~mask).flatten())
        stats = {
            "threat": "none",
            "epsilon": None,
            "poison_linf": 0.0,
            "poison_l2": 0.0,
            "poison_psnr": None,
            "attack_stats": canonical_json({"poison": {**poison_info, "withheld": n_poisoned}}),
            "source_arch": "",
            "plugin": "builtin",
            "poison_ratio": ratio,
        }
        return Poisoned(Splits(clean.name, published, clean.test, clean.info), stats, 0.0)

    entry_meta: dict
    if cache is None:
        t0 = time.perf_counter()
        tensors, entry_meta = _generate(task, clean, device, on_round)
        gen_seconds, generated, pkey = time.perf_counter() - t0, 1, None
    else:
        entry, created = cache.get_or_create(PERTURBATION, task.perturbation_spec(fp), lambda: _generate(task, clean, device, on_round))
        tensors, entry_meta, pkey = entry.tensors, entry.meta, entry.key
        if created:
            generated, gen_seconds = 1, entry.manifest.get("seconds") or 0.0
    pert = Perturbation(tensors["delta"], mode=entry_meta["mode"], stats=entry_meta["stats"])
    published = apply_perturbation(clean.train, pert, m.apply, mask)
    threat = threat_of(task.attack.name)
    params = ATTACKS.validate(task.attack.name, task.attack.params)
    measured = validate_poison(task.attack.name, threat, params, clean.train, published)
    budget = threat.budget(params)
    poison_info["perturbation"] = pkey[:16] if pkey else None
    stats = {
        "threat": threat.describe(params),
        "epsilon": None if math.isinf(budget) else budget,
        "poison_linf": measured.linf,
        "poison_l2": measured.l2,
        "poison_psnr": None if math.isinf(measured.psnr) else measured.psnr,
        "attack_stats": canonical_json({**pert.stats, "poison": poison_info}),
        "source_arch": entry_meta.get("source_arch", ""),
        "plugin": ATTACKS.get(task.attack.name).source,
        "poison_ratio": ratio,
    }
    return Poisoned(Splits(clean.name, published, clean.test, clean.info), stats, gen_seconds, generated=generated)


def make_poison(task: PoisonTask, m: Matrix, clean: Splits, device, on_round=None) -> Poisoned:
    """Generate and publish one poison without a cache (library use and tests of attacks)."""
    return materialize(task, m, clean, None, device, on_round)


def _jsonable(obj: Any) -> Any:
    import json

    return json.loads(canonical_json(obj))


# -- training one cell --------------------------------------------------------------------
def run_cell(cell: Cell, m: Matrix, poison: Poisoned, dev, chash: str, progress=None) -> tuple[ResultRow, list]:
    """Train one exploiter on one poison; a failure becomes a failed row, never an exception."""
    from bench.models import create_model
    from bench.trainer import accuracy, fit

    data = poison.splits
    base = _row_base(cell, m, poison, dev, chash)
    if poison.error:
        return ResultRow(**base, status="failed", error=poison.error), []
    bar = None
    try:
        stack = DefenseStack.build([(d.name, d.params) for d in cell.defense])
        seed_everything(cell.seed)
        c, h, _ = data.train.x.shape[1:]
        model = create_model(cell.arch, num_classes=data.num_classes, in_chans=c, img_size=h)
        bar = progress(f"{base['attack']} / {base['defense']} / {cell.arch}", m.train.epochs) if progress else None
        tick = (lambda done, total, **kw: bar.update(1)) if bar is not None else None
        res = fit(model, data.train, data.test, m.train, stack, seed=cell.seed, device=dev, progress=tick)
        x_test = stack.transform_test(data.test.x.to(dev))
        if cell.poison.poison_classes:
            ids = torch.tensor([data.test.classes.index(c) for c in cell.poison.poison_classes])
            hit = torch.isin(data.test.y.cpu(), ids)
            for name, sel in (("acc_poisoned_classes", hit), ("acc_other_classes", ~hit)):
                idx = torch.nonzero(sel).flatten()
                if len(idx):
                    res.extra[name] = round(100 * accuracy(model, x_test[idx.to(x_test.device)], data.test.y[idx]), 4)
        if m.robust is not None:
            from bench.robust import evaluate_robust

            res.extra.update(evaluate_robust(model, x_test, data.test.y, m.robust, cell.seed))
    except Exception as exc:  # noqa: BLE001 - recorded in the row; the matrix goes on
        log.exception("cell failed")
        return ResultRow(**base, status="failed", error=_one_line(exc)), []
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


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".replace("\n", " ")


def _row_base(cell: Cell, m: Matrix, poison: Poisoned, dev, chash: str) -> dict:
    v = versions()
    s = poison.stats
    ds = cell.poison.dataset
    task = cell.poison
    plugins = {"attack": s.get("plugin", "builtin")}
    plugins.update({d.name: DEFENSES.get(d.name).source for d in cell.defense})
    return {
        "cell_hash": cell.key(m),
        "matrix": m.name,
        "dataset": ds.name if not ds.params else f"{ds.name}{canonical_json(ds.params)}",
        "attack": task.label(m),
        "attack_name": CLEAN_ONLY if task.clean_only else task.attack.name,
        "attack_params": "{}" if task.clean_only else canonical_json(attack_params(task.attack)),
        "defense": m.defense_label(list(cell.defense)),
        "defense_params": canonical_json(defense_params(cell.defense)),
        "arch": cell.arch,
        "source_arch": s.get("source_arch", ""),
        "poison_ratio": s.get("poison_ratio", task.poison_ratio),
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


# -- task functions (run in any process) ----------------------------------------------------
class _Memo:
    """Per-process state of task functions: parsed matrices, the last dataset and poison."""

    matrices: dict[str, tuple[Matrix, dict[str, Cell], dict[str, PoisonTask]]] = {}
    dataset: tuple[str, Splits] | None = None
    poison: tuple[str, Poisoned] | None = None


def _job_state(job: dict) -> tuple[Matrix, dict[str, Cell], dict[str, PoisonTask]]:
    mkey = canonical_json(job["matrix"])
    if mkey not in _Memo.matrices:
        m = parse_matrix(job["matrix"])
        cells = plan(m)
        _Memo.matrices = {mkey: (m, {c.key(m): c for c in cells}, {c.poison.key(m): c.poison for c in cells})}
    return _Memo.matrices[mkey]


def _clean(task: PoisonTask, job: dict) -> Splits:
    dkey = canonical_json([dataset_spec(task.dataset), str(job["data_root"])])
    if _Memo.dataset is None or _Memo.dataset[0] != dkey:
        _Memo.dataset = None
        _Memo.poison = None
        _Memo.dataset = (dkey, load_dataset(task.dataset, Path(job["data_root"])))
    return _Memo.dataset[1]


def _poisoned(task: PoisonTask, m: Matrix, job: dict, dev, on_round=None) -> tuple[Poisoned, bool]:
    """(published poison, whether this call made it): from memory, else from the cache."""
    pkey = canonical_json([task.key(m), job["cache_dir"]])
    if _Memo.poison is not None and _Memo.poison[0] == pkey:
        return _Memo.poison[1], False
    _Memo.poison = None
    clean = _clean(task, job)
    cache = Cache(job["cache_dir"], job.get("lock", "file"), job.get("stale_after"))
    try:
        poisoned = materialize(task, m, clean, cache, dev, on_round)
    except (OSError, Timeout):
        raise  # infrastructure: let the executor retry
    except Exception as exc:  # noqa: BLE001 - the attack failed: every cell on it fails with this
        log.exception("poison %s failed", task.label(m))
        return Poisoned(clean, {}, 0.0, error=_one_line(exc)), True  # not kept: a retry tries again
    _Memo.poison = (pkey, poisoned)
    return poisoned, True


def poison_task(job: dict, progress=None) -> dict:
    """Make (or find) one poison in the cache and validate it; report what happened."""
    m, _, poisons = _job_state(job)
    task = poisons[job["poison"]]
    dev = prepare_device(job.get("device") or m.device)
    bar = progress(f"poison {task.label(m)} seed {task.seed}", None) if progress else None

    def on_round(done, total=None, **info) -> None:
        if bar is not None:
            bar.total, bar.n = total, done
            bar.refresh()

    try:
        poisoned, _ = _poisoned(task, m, job, dev, on_round)
    finally:
        if bar is not None:
            bar.close()
    return {"poison": job["poison"], "error": poisoned.error, "generated": poisoned.generated, "gen_seconds": poisoned.gen_seconds}


def train_task(job: dict, progress=None) -> dict:
    """Train one cell on its poison (read from the cache); return its row and curve."""
    m, cells, _ = _job_state(job)
    cell = cells[job["cell"]]
    dev = prepare_device(job.get("device") or m.device)
    poisoned, fresh = _poisoned(cell.poison, m, job, dev)
    row, curve = run_cell(cell, m, poisoned, dev, config_hash(m), progress)
    return {"row": row.model_dump(mode="json"), "curve": curve, "generated": poisoned.generated if fresh else 0}


# -- the scheduler ------------------------------------------------------------------------
class _Done:
    """The ok / failed cells of a results file, re-read only when the file changed."""

    def __init__(self, store: ResultStore):
        self.store = store
        self._stamp: tuple | None = None
        self.ok: set[str] = set()
        self.failed: dict[str, ResultRow] = {}

    def refresh(self) -> "_Done":
        try:
            st = self.store.path.stat()
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        except FileNotFoundError:
            stamp = None
        if stamp != self._stamp:
            rows = self.store.rows()
            self.ok = {r.cell_hash for r in rows if r.status == "ok"}
            self.failed = {r.cell_hash: r for r in rows if r.status == "failed"}
            self._stamp = stamp
        return self


class _Claims:
    """Per-cell locks in ``<results>/.claims/`` so concurrent runs split the cells."""

    def __init__(self, results_dir: Path):
        self.dir = Path(results_dir) / ".claims"

    def take(self, key: str, blocking: bool) -> FileLock | None:
        self.dir.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.dir / f"{key}.lock"), timeout=-1 if blocking else 0)
        try:
            lock.acquire()
        except Timeout:
            return None
        return lock


def status(
    m: Matrix, results_dir: Path, data_root: Path, cache_dir: Path | None = None, retry_failed: bool = False, datasets: dict | None = None
) -> PlanStatus:
    """Which cells are done, failed, to do; which poisons they need and which are cached."""
    cells = plan(m)
    done = _Done(ResultStore(results_dir, m.name)).refresh()
    ok = [c for c in cells if c.key(m) in done.ok]
    failed = [c for c in cells if c.key(m) in done.failed and not retry_failed]
    skip = {c.key(m) for c in ok + failed}
    todo = [c for c in cells if c.key(m) not in skip]
    cache = Cache(resolve_cache_dir(cache_dir))
    datasets = datasets if datasets is not None else {}
    seen, poisons, cached = set(), [], []
    for task in {c.poison.key(m): c.poison for c in todo}.values():
        clean = _dataset(task, data_root, datasets, m)
        if task.clean_only:
            continue
        key = _pert_key(task, clean)
        if key in seen:
            continue
        seen.add(key)
        poisons.append(task)
        if cache.contains(PERTURBATION, key):
            cached.append(task)
    return PlanStatus(cells, ok, failed, todo, poisons, cached, [p for p in poisons if p not in cached])


def _pert_key(task: PoisonTask, clean: Splits) -> str:
    from bench.cache import cache_key

    return cache_key(PERTURBATION, task.perturbation_spec(_fingerprint(clean)))


def _dataset(task: PoisonTask, root: Path, datasets: dict, m: Matrix) -> Splits:
    """The scheduler's copy of a dataset (shared with in-process tasks, loaded once)."""
    dkey = canonical_json([dataset_spec(task.dataset), str(root)])
    if dkey not in datasets:
        if _Memo.dataset is not None and _Memo.dataset[0] == dkey:
            datasets[dkey] = _Memo.dataset[1]
        else:
            datasets[dkey] = load_dataset(task.dataset, root)
            _Memo.dataset, _Memo.poison = (dkey, datasets[dkey]), None
        check_classes(m, datasets[dkey])
    return datasets[dkey]


def stale_rows(m: Matrix, results_dir: Path) -> list[ResultRow]:
    """Rows in the matrix's results file whose cells the matrix no longer has (it was edited)."""
    keys = _cell_keys(m)
    return [r for r in ResultStore(results_dir, m.name).rows() if r.cell_hash not in keys]


def prune(m: Matrix, results_dir: Path) -> list[ResultRow]:
    """Remove `stale_rows` (and their curves) from the results; return what was removed."""
    return ResultStore(results_dir, m.name).prune(_cell_keys(m))


def _cell_keys(m: Matrix) -> set[str]:
    return {c.key(m) for c in plan(m)}


def run_matrix(
    m: Matrix,
    results_dir: Path,
    data_root: Path,
    device: str | None = None,
    progress: Callable[..., object] | None = None,
    *,
    cache_dir: Path | str | None = None,
    lock: str = "file",
    stale_after: float | None = None,
    retry_failed: bool = False,
    executor: str = "local",
    executor_params: dict | None = None,
) -> RunSummary:
    """Run every cell of ``m`` not already in ``results_dir``; return the summary."""
    from bench.executors import EXECUTORS, TaskLost

    t_start = time.perf_counter()
    preflight(m)
    store = ResultStore(results_dir, m.name)
    datasets: dict[str, Splits] = {}
    st = status(m, results_dir, data_root, cache_dir, retry_failed, datasets)
    done = _Done(store).refresh()
    summary = RunSummary(
        total=len(st.cells),
        skipped=len(st.done),
        skipped_failed=[done.failed[c.key(m)] for c in st.failed],
        poisons_needed=len(st.poisons),
        results_path=store.path,
    )
    if not st.todo:
        summary.seconds = time.perf_counter() - t_start
        return summary

    dev = resolve_device(device or m.device)
    chash = config_hash(m)
    job = {
        "matrix": m.model_dump(mode="json"),
        "data_root": str(data_root),
        "cache_dir": str(resolve_cache_dir(cache_dir)),
        "lock": lock,
        "stale_after": stale_after,
        "device": device,
    }
    groups: dict[str, list[Cell]] = {}
    for c in st.todo:
        groups.setdefault(c.poison.key(m), []).append(c)
    tasks = {k: cells[0].poison for k, cells in groups.items()}
    poison_queue = deque(groups)
    ready: deque[Cell] = deque()
    deferred: deque[Cell] = deque()
    gen_owed: dict[str, float] = {}  # generation time, reported on the poison's first row
    attempts: dict[tuple[str, str], int] = {}
    inflight: dict[Any, tuple[str, Any, FileLock | None]] = {}
    claims = _Claims(results_dir)
    bar = progress("cells", len(st.todo)) if progress else None

    def finish(row: ResultRow, curve: list | None, pkey: str) -> None:
        owed = gen_owed.pop(pkey, None)
        row = row.model_copy(update={"gen_seconds": round(owed or 0.0, 3)})
        store.append(row, curve)
        summary.rows.append(row)
        if row.status == "ok":
            summary.ok += 1
        else:
            summary.failed += 1
        if bar is not None:
            bar.update(1)

    def start_cell(cell: Cell, blocking: bool) -> bool:
        key = cell.key(m)
        claim = claims.take(key, blocking)
        if claim is None:
            deferred.append(cell)
            return False
        if key in done.refresh().ok:  # a concurrent run finished it meanwhile
            claim.release()
            summary.elsewhere += 1
            if bar is not None:
                bar.update(1)
            return False
        h = ex.submit(train_task, {**job, "cell": key}, "train")
        inflight[h] = ("cell", cell, claim)
        return True

    with EXECUTORS.create(executor, **(executor_params or {})) as ex:
        summary.executor = ex.describe()
        if ex.in_process:
            ex.progress = progress
        while True:
            while len(inflight) < ex.capacity:
                if ready:
                    start_cell(ready.popleft(), blocking=False)
                elif poison_queue:
                    pkey = poison_queue.popleft()
                    inflight[ex.submit(poison_task, {**job, "poison": pkey}, "poison")] = ("poison", pkey, None)
                elif deferred and not inflight:
                    start_cell(deferred.popleft(), blocking=True)
                else:
                    break
            if not inflight:
                break
            for h in ex.wait(list(inflight)):
                kind, obj, claim = inflight.pop(h)
                name = obj if kind == "poison" else obj.key(m)
                try:
                    res, error = ex.result(h), ""
                except TaskLost as exc:
                    attempts[(kind, name)] = attempts.get((kind, name), 0) + 1
                    if attempts[(kind, name)] <= 1:
                        log.warning("%s: retrying after %s", name, exc)
                        if claim is not None:
                            claim.release()
                        (poison_queue if kind == "poison" else ready).appendleft(obj)
                        continue
                    res, error = None, _one_line(exc)
                except Exception as exc:  # noqa: BLE001 - an infrastructure error: fail what depends on it
                    res, error = None, _one_line(exc)
                if kind == "poison":
                    error = error or res["error"]
                    if error:
                        summary.poisons_failed += 1
                        clean = _dataset(tasks[obj], data_root, datasets, m)
                        for cell in groups[obj]:
                            row, curve = run_cell(cell, m, Poisoned(clean, {}, 0.0, error=error), dev, chash)
                            finish(row, curve, obj)
                        continue
                    if res["generated"]:
                        summary.poisons_generated += res["generated"]
                        gen_owed[obj] = res["gen_seconds"]
                    ready.extend(groups[obj])
                else:
                    if error:
                        clean = _dataset(obj.poison, data_root, datasets, m)
                        row, curve = run_cell(obj, m, Poisoned(clean, {}, 0.0, error=error), dev, chash)
                    else:
                        row, curve = ResultRow.model_validate(res["row"]), res["curve"]
                        summary.poisons_generated += res.get("generated", 0)
                    finish(row, curve, obj.poison.key(m))
                    if claim is not None:
                        claim.release()
    if bar is not None:
        bar.close()
    summary.poisons_cached = max(0, summary.poisons_needed - summary.poisons_generated - summary.poisons_failed)
    summary.seconds = time.perf_counter() - t_start
    return summary


# -- reports (text for the CLI) -------------------------------------------------------------
def format_status(m: Matrix, st: PlanStatus, cache_dir: Path, retry_failed: bool) -> str:
    """The dry-run report: cells total / done / failed / to compute; poisons cached / to generate."""
    lines = [
        f"matrix {m.name}: {len(st.cells)} cells: {len(st.done)} done, "
        + (f"{len(st.failed)} failed (skipped; --retry-failed reruns them), " if st.failed else "")
        + f"{len(st.todo)} to compute",
        f"poisons needed by them: {len(st.poisons)}: {len(st.cached)} cached, {len(st.to_generate)} to generate",
    ]
    baselines = {c.poison.key(m) for c in st.todo if c.poison.clean_only}
    if baselines:
        lines.append(f"clean-only baselines: {len(baselines)} (no poison to generate)")
    for p in st.to_generate:
        src = p.attack.params.get("source_arch")
        lines.append(f"  generate: {p.label(m)} · {p.dataset.name} · seed {p.seed}" + (f" · source {src}" if src else ""))
    lines.append(f"cache: {cache_dir}")
    return "\n".join(lines)


def format_summary(s: RunSummary) -> str:
    """The final summary table of a run."""
    rows = [
        ("cells", s.total),
        ("  already done", s.skipped),
        ("  failed before, skipped", len(s.skipped_failed)),
        ("  done by a concurrent run", s.elsewhere),
        ("  trained ok", s.ok),
        ("  failed", s.failed),
        ("poisons needed", s.poisons_needed),
        ("  generated", s.poisons_generated),
        ("  from cache", s.poisons_cached),
        ("  failed", s.poisons_failed),
    ]
    width = max(len(k) for k, _ in rows)
    out = [f"{k:<{width}}  {v:>6}" for k, v in rows]
    out.append(f"{'wall time':<{width}}  {s.seconds:>5.0f}s" + (f"  ({s.executor})" if s.executor else ""))
    return "\n".join(out)
