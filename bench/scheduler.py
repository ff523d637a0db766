"""The scheduler: run a matrix as a DAG of poison tasks and train cells, computing nothing twice.

The driver decides; workers compute. This module imports neither torch nor a dataset: it
sends small typed jobs (`bench.jobs`) to an executor and writes the rows the workers return.

* **Facts first**: one dataset job per dataset reports its fingerprint, sizes and classes
  (and checks every model name the matrix references), so the driver can key poisons, check
  ``poison_classes`` and write failed rows without holding any data.
* **Cache**: a poison task generates its perturbation δ (and its poisoned-index set) once
  into the content-addressed cache; every later run, process or node reads it back.
* **Resume**: a cell whose row exists in ``<results-dir>/<matrix>.csv`` is skipped; a cell
  that failed is skipped and reported unless ``retry_failed``. Rows are appended by this
  process only (workers return them), one line per write, so a kill never leaves a torn or
  duplicate row.
* **Claims**: before training a cell, the scheduler takes a non-blocking lock on it in the
  results folder (``.claims/``); concurrent runs on one results folder therefore split the
  cells instead of training each twice, and a cell claimed elsewhere is re-checked once its
  lock frees. With ``lock="soft"`` the claims are marker files (shared filesystems without
  ``flock``), like the cache's locks.
* **Executors** (`bench.executors`): where jobs run. A worker that died is retried once.
* **Failures**: a poison or cell that raises is recorded as a failed row with its one-line
  error; the rest of the matrix goes on.
"""
from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock, SoftFileLock, Timeout

from bench.atomic import sweep_temp
from bench.cache import Cache, resolve_cache_dir
from bench.config import Matrix
from bench.jobs import CellJob, DatasetJob, PoisonJob, WorkerEnv, cell_task, dataset_task, poison_task
from bench.plan import Cell, Plan, dataset_key
from bench.plan import plan as make_plan
from bench.preflight import check_classes, model_refs
from bench.records import DatasetFacts
from bench.results import ResultRow
from bench.status import PlanStatus, perturbation_key, status
from bench.store import ResultStore

log = logging.getLogger("uebench.run")


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
    notes: list[str] = field(default_factory=list)  # e.g. a cached poison made by other code
    results_path: Path | None = None

    @property
    def trained(self) -> int:
        """Cells this run computed (ok or failed in training)."""
        return self.ok + self.failed


class _Claims:
    """Per-cell locks in ``<results>/.claims/`` so concurrent runs split the cells."""

    def __init__(self, results_dir: Path, soft: bool):
        self.dir = Path(results_dir) / ".claims"
        self.soft = soft

    def take(self, key: str, blocking: bool):
        self.dir.mkdir(parents=True, exist_ok=True)
        cls = SoftFileLock if self.soft else FileLock
        lock = cls(str(self.dir / f"{key}.lock"), timeout=-1 if blocking else 0)
        try:
            lock.acquire()
        except Timeout:
            return None
        return lock


def env_for(data_root: Path, cache_dir: Path | str | None, lock: str = "file", stale_after: float | None = None,
            device: str | None = None) -> WorkerEnv:
    return WorkerEnv(data_root=str(data_root), cache_dir=str(resolve_cache_dir(cache_dir)), lock=lock,
                     stale_after=stale_after, device=device)


def gather_facts(p: Plan, env: WorkerEnv, ex=None) -> dict[str, DatasetFacts]:
    """Each dataset's facts from a dataset job (the first also checks every model name the
    matrix references); with no executor, the jobs run in this process."""
    m = p.matrix
    refs = model_refs(m)
    datasets = list({dataset_key(d): d for sub in m.matrices() for d in sub.datasets}.values())
    archs = tuple(dict.fromkeys(a for sub in m.matrices() for a in sub.archs))
    facts: dict[str, DatasetFacts] = {}
    for i, d in enumerate(datasets):
        job = DatasetJob(env=env, dataset=d.model_dump(mode="json"), archs=archs if i == 0 else (),
                         models=refs if i == 0 else ()).model_dump(mode="json")
        if ex is None:
            out = dataset_task(job)
        else:
            h = ex.submit(dataset_task, job, "dataset")
            ex.wait([h])
            out = ex.result(h)
        f = DatasetFacts.from_json(out)
        check_classes(m, f)
        facts[dataset_key(d)] = f
    return facts


def plan_status(m: Matrix, results_dir: Path, env: WorkerEnv, retry_failed: bool = False, regenerate=(), only=None,
                ex=None) -> PlanStatus:
    """The dry run: what `run_matrix` would do (loads each dataset once, trains nothing)."""
    p = make_plan(m)
    facts = gather_facts(p, env, ex)
    return status(p, ResultStore(results_dir, m.name), facts, Cache(env.cache_dir), retry_failed, regenerate, only)


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
    regenerate: list[str] | tuple[str, ...] = (),
    only: dict[str, list[str]] | None = None,
    executor: str = "local",
    executor_params: dict | None = None,
) -> RunSummary:
    """Run every cell of ``m`` not already in ``results_dir``; return the summary."""
    from bench.cell import failed_row, one_line
    from bench.executors import EXECUTORS, TaskLost

    t_start = time.perf_counter()
    p = make_plan(m)
    env = env_for(data_root, cache_dir, lock, stale_after, device)
    store = ResultStore(results_dir, m.name)
    with EXECUTORS.create(executor, **(executor_params or {})) as ex:
        facts = gather_facts(p, env, ex)
        st = status(p, store, facts, Cache(env.cache_dir), retry_failed, regenerate, only)
        summary = RunSummary(
            total=len(st.selected), skipped=len(st.done), skipped_failed=[st.failed_rows[c.key] for c in st.failed],
            poisons_needed=len(st.poisons), results_path=store.path, executor=ex.describe(),
        )
        if not st.todo:
            summary.seconds = time.perf_counter() - t_start
            return summary
        sweep_temp(results_dir)
        if ex.in_process:
            ex.progress = progress
        device_label = _device_label(device or m.device)
        groups: dict[str, list[Cell]] = {}
        for c in st.todo:
            groups.setdefault(c.poison.key, []).append(c)
        tasks = {k: cells[0].poison for k, cells in groups.items()}
        regen_todo = set(st.regenerate)  # perturbation keys still to remake (once each)
        poison_queue = deque(groups)
        ready: deque[Cell] = deque()
        deferred: deque[Cell] = deque()
        gen_owed: dict[str, float] = {}  # generation time, reported on the poison's first row
        attempts: dict[tuple[str, str], int] = {}
        inflight: dict[Any, tuple[str, Any, Any]] = {}
        claims = _Claims(results_dir, soft=lock == "soft")
        bar = progress("cells", len(st.todo)) if progress else None
        seen_ok: dict[str, Any] = {"stamp": None, "keys": set()}

        def done_elsewhere(key: str) -> bool:
            """Whether a concurrent run wrote an ok row for ``key`` (re-read only when the file changed)."""
            stamp = store.stamp()
            if stamp != seen_ok["stamp"]:
                seen_ok["keys"] = {r.cell_hash for r in store.rows() if r.status == "ok"}
                seen_ok["stamp"] = stamp
            return key in seen_ok["keys"]

        def finish(row: ResultRow, curve: list | None) -> None:
            store.append(row, curve)
            summary.rows.append(row)
            if row.status == "ok":
                summary.ok += 1
            else:
                summary.failed += 1
            if bar is not None:
                bar.update(1)

        def fail(cell: Cell, error: str) -> None:
            finish(failed_row(cell, p.settings, facts[dataset_key(cell.poison.dataset)], error, device_label), None)

        def start_cell(cell: Cell, blocking: bool) -> None:
            claim = claims.take(cell.key, blocking)
            if claim is None:
                deferred.append(cell)
                return
            if cell.key not in st.rerun and done_elsewhere(cell.key):  # a concurrent run finished it meanwhile
                claim.release()
                summary.elsewhere += 1
                if bar is not None:
                    bar.update(1)
                return
            job = CellJob(env=env, settings=p.settings, cell=cell, data=facts[dataset_key(cell.poison.dataset)].to_json(),
                          gen_seconds=gen_owed.pop(cell.poison.key, 0.0))
            inflight[ex.submit(cell_task, job.model_dump(mode="json"), "train")] = ("cell", cell, claim)

        def start_poison(pkey: str) -> None:
            task = tasks[pkey]
            pert = None if task.clean_only else perturbation_key(task, facts)
            regen = pert in regen_todo
            regen_todo.discard(pert)
            job = PoisonJob(env=env, settings=p.settings, task=task, regenerate=regen)
            inflight[ex.submit(poison_task, job.model_dump(mode="json"), "poison")] = ("poison", pkey, None)

        while True:
            while len(inflight) < ex.capacity:
                if ready:
                    start_cell(ready.popleft(), blocking=False)
                elif poison_queue:
                    start_poison(poison_queue.popleft())
                elif deferred and not inflight:
                    start_cell(deferred.popleft(), blocking=True)
                else:
                    break
            if not inflight:
                break
            for h in ex.wait(list(inflight)):
                kind, obj, claim = inflight.pop(h)
                name = obj if kind == "poison" else obj.key
                try:
                    res, error = ex.result(h), ""
                except TaskLost as exc:
                    attempts[(kind, name)] = attempts.get((kind, name), 0) + 1
                    if claim is not None:
                        claim.release()
                    if attempts[(kind, name)] <= 1:
                        log.warning("%s: retrying after %s", name, exc)
                        if kind == "poison":
                            poison_queue.appendleft(obj)
                        else:
                            ready.appendleft(obj)
                        continue
                    res, error, claim = None, one_line(exc), None
                except Exception as exc:
                    res, error = None, one_line(exc)
                if kind == "poison":
                    error = error or res["error"]
                    if error:
                        summary.poisons_failed += 1
                        for cell in groups[obj]:
                            fail(cell, error)
                        continue
                    summary.notes.extend(n for n in res.get("notes", []) if n not in summary.notes)
                    if res["generated"]:
                        summary.poisons_generated += res["generated"]
                        gen_owed[obj] = res["gen_seconds"]
                    ready.extend(groups[obj])
                else:
                    if error:
                        fail(obj, error)
                    else:
                        finish(ResultRow.model_validate(res["row"]), res["curve"])
                        summary.poisons_generated += res.get("generated", 0)
                    if claim is not None:
                        claim.release()
        if bar is not None:
            bar.close()
    if st.replaces_rows:
        store.compact()
    summary.poisons_cached = max(0, summary.poisons_needed - summary.poisons_generated - summary.poisons_failed)
    summary.seconds = time.perf_counter() - t_start
    return summary


def _device_label(device: str) -> str:
    """A failed row's device when no worker reported one: the configured device."""
    return device if device not in (None, "auto") else "auto"
