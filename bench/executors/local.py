"""``local``: run tasks in this process, or in ``workers`` spawned processes on this machine.

With one worker (the default) tasks run inline, in the order the scheduler asks, so the
current cell can show its own progress bar. With ``workers: N`` each of N spawned processes
is pinned to one GPU (round-robin over the visible ones) or, on a CPU-only machine, gets
``cores // N`` torch threads. A worker that dies (killed, out of host memory) breaks the
pool: the pool is rebuilt and the lost tasks are reported as `TaskLost`, which the
scheduler retries once.
"""
from __future__ import annotations

import itertools
import os
from collections import OrderedDict
from collections.abc import Hashable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from bench.executors import EXECUTORS, Executor, TaskFn, TaskLost


class LocalParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    workers: int = Field(1, ge=1, description="processes; 1 runs tasks in the calling process")
    threads: int | None = Field(None, ge=1, description="torch threads per worker (default: cores // workers)")
    gpus: list[int] | None = Field(None, description="GPU ids to pin workers to (default: all visible)")


@EXECUTORS.register(
    "local",
    params=LocalParams,
    description="This machine: in-process, or N worker processes pinned to a GPU or a share of the cores",
)
def make_local(params: LocalParams) -> Executor:
    return InlineExecutor() if params.workers == 1 else PoolExecutor(params)


class InlineExecutor(Executor):
    """Runs each task in the calling process when the scheduler waits for it (FIFO)."""

    capacity = 1
    in_process = True

    def __init__(self) -> None:
        self.progress = None
        self._ids = itertools.count()
        self._pending: OrderedDict[int, tuple[TaskFn, dict]] = OrderedDict()
        self._done: dict[int, tuple[bool, Any]] = {}

    def submit(self, fn: TaskFn, job: dict, kind: str = "task") -> Hashable:
        h = next(self._ids)
        self._pending[h] = (fn, job)
        return h

    def wait(self, handles: list[Hashable]) -> list[Hashable]:
        finished = [h for h in handles if h in self._done]
        if finished:
            return finished
        h = next(h for h in handles if h in self._pending)
        fn, job = self._pending.pop(h)
        try:
            self._done[h] = (True, fn(job, progress=self.progress))
        except Exception as exc:
            self._done[h] = (False, exc)
        return [h]

    def result(self, handle: Hashable) -> dict:
        ok, value = self._done.pop(handle)
        if not ok:
            raise value
        return value

    def describe(self) -> str:
        return "local (in-process)"


def _exit_with_parent(parent: int, every: float = 1.0) -> None:
    """End this worker as soon as the driver that spawned it is gone.

    A driver stopped by SIGTERM or SIGKILL never shuts its pool down, and its workers would go
    on training cells of a plan nobody reads, on cores the next run needs. A daemon thread
    polls the parent pid (the worker is re-parented when the driver dies) and exits at once.
    """
    import threading
    import time

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every)
        os._exit(1)

    threading.Thread(target=watch, name="uebench-parent-watch", daemon=True).start()


def _init_worker(slots, threads: int, gpus: list[int], parent: int) -> None:
    """Pin this worker before torch initializes CUDA: one GPU, and its share of CPU threads;
    and make it end with its driver."""
    _exit_with_parent(parent)
    slot = slots.get()
    if gpus:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpus[slot % len(gpus)])
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)


def _call(fn: TaskFn, job: dict) -> dict:
    return fn(job, progress=None)


class PoolExecutor(Executor):
    """N spawned worker processes (spawn, not fork: CUDA and threads do not survive fork)."""

    def __init__(self, params: LocalParams):
        self.params = params
        self.capacity = params.workers
        self.threads = params.threads or max(1, (os.cpu_count() or 1) // params.workers)
        self.gpus = params.gpus if params.gpus is not None else _visible_gpus()
        self._pool: ProcessPoolExecutor | None = None
        self._pool_of: dict[Future, ProcessPoolExecutor] = {}

    def _ensure_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            import multiprocessing as mp

            ctx = mp.get_context("spawn")
            slots = ctx.Queue()
            for i in range(self.params.workers):
                slots.put(i)
            self._pool = ProcessPoolExecutor(
                max_workers=self.params.workers, mp_context=ctx, initializer=_init_worker, initargs=(slots, self.threads, self.gpus, os.getpid())
            )
        return self._pool

    def submit(self, fn: TaskFn, job: dict, kind: str = "task") -> Hashable:
        pool = self._ensure_pool()
        fut = pool.submit(_call, fn, job)
        self._pool_of[fut] = pool
        return fut

    def wait(self, handles: list[Hashable]) -> list[Hashable]:
        done, _ = wait(handles, return_when=FIRST_COMPLETED)
        return list(done)

    def result(self, handle: Hashable) -> dict:
        pool = self._pool_of.pop(handle, None)
        try:
            return handle.result()
        except BrokenProcessPool as exc:
            if pool is not None and pool is self._pool:  # the first loss seen from this pool: replace it
                pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None
            raise TaskLost(f"worker process died ({exc})") from None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def describe(self) -> str:
        pin = f"GPUs {self.gpus}" if self.gpus else f"{self.threads} threads each"
        return f"local ({self.params.workers} workers, {pin})"


def _visible_gpus() -> list[int]:
    """CUDA devices visible to this process ([] without CUDA; never initializes CUDA here)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [int(g) for g in env.split(",") if g.strip().isdigit()]
    try:
        import torch

        return list(range(torch.cuda.device_count()))
    except Exception:
        return []
