"""``ray``: run tasks as Ray tasks on a local or multi-node cluster (extra ``uebench[ray]``).

Each task asks Ray for ``num_cpus`` and ``num_gpus`` (fractional GPUs pack several small
trainings on one card: ``num_gpus: 0.25`` runs four at a time); Ray sets
``CUDA_VISIBLE_DEVICES`` for it, so ``device: auto`` picks the assigned GPU. Only the small
JSON job travels through Ray: poisons go through the shared cache folder, which every node
must see at the same path (as must the data root). Results come back to the driver, which
alone writes the rows.

Retries: a task whose worker process or node dies is retried by Ray (``max_retries``), and
so is one that raises `OSError`/`TimeoutError` (a flaky shared filesystem). A plugin bug or
a diverging loss is not an exception here at all: the task returns a failed row, so it is
recorded once and never retried. Retrying is safe because tasks are idempotent.
"""
from __future__ import annotations

import importlib
import os
from collections.abc import Hashable

from pydantic import BaseModel, ConfigDict, Field

from bench.executors import EXECUTORS, Executor, ExecutorError, TaskFn


class RayParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    address: str | None = Field(
        None, description="cluster to join ('auto', 'ray://host:10001', host:port); None: $RAY_ADDRESS, else a new local instance"
    )
    num_cpus: float = Field(1.0, gt=0, description="CPUs per task (also its torch threads)")
    num_gpus: float | None = Field(
        None, ge=0, description="GPUs per task, fractions allowed; None: 1 if the cluster has GPUs, else 0"
    )
    max_retries: int = Field(2, ge=0, description="retries after a worker or node died, or a transient OSError")
    local_cpus: int | None = Field(None, ge=1, description="CPUs of a new local instance (default: all)")


def _run_task(fn_path: str, job: dict, threads: int) -> dict:
    """What a Ray worker executes: import the task function by name and call it."""
    import torch

    torch.set_num_threads(threads)
    module, name = fn_path.split(":")
    fn = getattr(importlib.import_module(module), name)
    return fn(job, progress=None)


@EXECUTORS.register(
    "ray",
    params=RayParams,
    description="Ray tasks on a local or multi-node cluster, with (fractional) GPU requests (extra uebench[ray])",
)
class RayExecutor(Executor):
    capacity = 1_000_000  # Ray queues by resources; the scheduler only submits what is ready

    def __init__(self, params: RayParams):
        try:
            import ray
        except ImportError:
            raise ExecutorError("--executor ray: Ray is not installed; pip install 'uebench[ray]'") from None
        self.ray = ray
        self.params = params
        self._owns = False
        if not ray.is_initialized():
            address = params.address or os.environ.get("RAY_ADDRESS") or None
            kwargs = {"include_dashboard": False, "log_to_driver": False} if address is None else {}
            if address is None and params.local_cpus:
                kwargs["num_cpus"] = params.local_cpus
            try:
                ray.init(address=address, **kwargs)
            except ConnectionError as exc:
                raise ExecutorError(f"--ray-address: cannot reach the Ray cluster at {address!r} ({exc})") from None
            self._owns = True
        gpus = ray.cluster_resources().get("GPU", 0)
        self.num_gpus = params.num_gpus if params.num_gpus is not None else (1.0 if gpus else 0.0)
        self._remote = ray.remote(_run_task).options(
            num_cpus=params.num_cpus,
            num_gpus=self.num_gpus,
            max_retries=params.max_retries,
            retry_exceptions=[OSError, TimeoutError],
        )

    def submit(self, fn: TaskFn, job: dict, kind: str = "task") -> Hashable:
        path = f"{fn.__module__}:{fn.__qualname__}"
        return self._remote.remote(path, job, max(1, int(self.params.num_cpus)))

    def wait(self, handles: list[Hashable]) -> list[Hashable]:
        done, _ = self.ray.wait(list(handles), num_returns=1)
        return done

    def result(self, handle: Hashable) -> dict:
        try:
            return self.ray.get(handle)
        except self.ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            raise (cause if isinstance(cause, BaseException) else RuntimeError(str(exc).splitlines()[0])) from None

    def close(self) -> None:
        if self._owns and self.ray.is_initialized():
            self.ray.shutdown()
            self._owns = False

    def describe(self) -> str:
        res = self.ray.cluster_resources()
        return f"ray ({res.get('CPU', 0):g} CPUs, {res.get('GPU', 0):g} GPUs; {self.params.num_cpus:g} CPU + {self.num_gpus:g} GPU per task)"
