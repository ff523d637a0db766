"""Jobs: the small typed records the scheduler sends to workers, and the task functions that
run them in any process (in-process, a spawned worker, a Ray node).

A job carries its task (a frozen `PoisonTask` or `Cell`, key included), the matrix-wide
`RunSettings` and the worker's environment (folders, lock mode, device); it travels as JSON,
never as tensors (those go through the cache). A worker never plans the matrix: everything
it needs is in the job. Each process keeps one `WorkerMemo`: the last dataset it loaded and
the last poison it published, so the cells of one poison that land on the same worker read
the cache once.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from bench.plan import Cell, PoisonTask, RunSettings, dataset_key
from bench.poison import PoisonRecord, facts_of, load_dataset, make_poison
from bench.records import DatasetFacts


class WorkerEnv(BaseModel):
    """Where a worker finds things and how it runs."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    data_root: str
    cache_dir: str
    lock: str = "file"
    stale_after: float | None = None
    device: str | None = None


class DatasetJob(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    env: WorkerEnv
    dataset: Any  # a DatasetSpec (pydantic validates it when the task runs)
    archs: tuple[str, ...] = ()
    models: tuple[tuple[str, str, str], ...] = ()  # (arch, JSON kwargs, where) a plugin's params reference


class PoisonJob(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    env: WorkerEnv
    settings: RunSettings
    task: PoisonTask
    regenerate: bool = False


class CellJob(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    env: WorkerEnv
    settings: RunSettings
    cell: Cell
    data: dict  # DatasetFacts.to_json()
    gen_seconds: float = 0.0


@dataclass
class WorkerMemo:
    """Per-process state of the task functions: the last dataset and the last poison."""

    dataset: tuple[str, Any] | None = None
    poison: tuple[str, PoisonRecord] | None = None

    def clean(self, spec, root: str):
        key = f"{dataset_key(spec)}@{root}"
        if self.dataset is None or self.dataset[0] != key:
            self.dataset = self.poison = None
            self.dataset = (key, load_dataset(spec, Path(root)))
        return self.dataset[1]

    def poisoned(self, job: PoisonJob, device, on_round=None) -> tuple[PoisonRecord, bool]:
        """(published poison, whether this call made it): from memory, else via the cache."""
        from bench.cache import Cache

        key = f"{job.task.key}@{job.env.cache_dir}"
        if not job.regenerate and self.poison is not None and self.poison[0] == key:
            return self.poison[1], False
        self.poison = None
        clean = self.clean(job.task.dataset, job.env.data_root)
        cache = Cache(job.env.cache_dir, job.env.lock, job.env.stale_after)
        record = make_poison(job.task, job.settings.apply, clean, cache, device, on_round, job.regenerate)
        self.poison = (key, record)
        return record, True


MEMO = WorkerMemo()


def _device(env: WorkerEnv, settings: RunSettings | None = None):
    from bench.device import prepare_device

    return prepare_device(env.device or (settings.device if settings else "auto"))


def dataset_task(job: dict, progress: Callable | None = None) -> dict:
    """Load a dataset and report its facts; check the archs and model references on the way
    (raises `bench.preflight.PreflightError` / `DatasetError` with one line)."""
    from bench.preflight import check_models

    j = DatasetJob.model_validate(job)
    check_models(j.archs, j.models)
    from bench.config import DatasetSpec

    spec = DatasetSpec.model_validate(j.dataset)
    clean = MEMO.clean(spec, j.env.data_root)
    return facts_of(dataset_key(spec), clean).to_json()


def poison_task(job: dict, progress: Callable | None = None) -> dict:
    """Make (or find) one poison in the cache and validate it; report what happened. A
    poison that cannot be made is reported as an error (every cell on it then fails)."""
    from bench.poison import PoisonError

    j = PoisonJob.model_validate(job)
    dev = _device(j.env, j.settings)
    bar = progress(f"poison {j.task.label} seed {j.task.seed}", None) if progress else None

    def on_round(done, total=None, **info) -> None:
        if bar is not None:
            bar.total, bar.n = total, done
            bar.refresh()

    try:
        record, _ = MEMO.poisoned(j, dev, on_round)
    except PoisonError as exc:
        return {"error": str(exc), "generated": 0, "gen_seconds": 0.0, "notes": []}
    except (OSError, TimeoutError):
        raise  # infrastructure: let the executor retry
    except Exception as exc:
        import logging

        from bench.cell import one_line

        logging.getLogger("uebench.poison").exception("poison %s failed", j.task.label)
        return {"error": one_line(exc), "generated": 0, "gen_seconds": 0.0, "notes": []}
    finally:
        if bar is not None:
            bar.close()
    return {"error": "", "generated": record.generated, "gen_seconds": record.gen_seconds, "notes": record.notes}


def cell_task(job: dict, progress: Callable | None = None) -> dict:
    """Train one cell on its poison (from memory or the cache); return its row and curve."""
    from bench.cell import failed_row, train_cell
    from bench.device import device_name
    from bench.poison import PoisonError

    j = CellJob.model_validate(job)
    dev = _device(j.env, j.settings)
    data = DatasetFacts.from_json(j.data)
    pjob = PoisonJob(env=j.env, settings=j.settings, task=j.cell.poison)
    try:
        record, fresh = MEMO.poisoned(pjob, dev)
    except PoisonError as exc:
        row = failed_row(j.cell, j.settings, data, str(exc), device_name(dev))
        return {"row": row.model_dump(mode="json"), "curve": None, "generated": 0}
    row, curve = train_cell(j.cell, j.settings, data, record, dev, j.gen_seconds, progress)
    return {"row": row.model_dump(mode="json"), "curve": curve, "generated": record.generated if fresh else 0}
