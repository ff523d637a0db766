"""Executors: where the scheduler's tasks run. One small interface, several back ends.

The scheduler (`bench.scheduler`) owns the DAG and decides what to run next; an executor only
runs ``fn(job)`` somewhere and hands the result back. ``job`` is a small JSON-able dict
(the matrix, a cache key or a cell key, folders): tensors never travel, they live in the
cache. Task functions are idempotent (a poison task on a cached key is a cache hit), so a
retried task never computes anything twice.

Back ends, registered in `EXECUTORS` (``uebench run --executor NAME``):

- ``local`` (default): in the calling process, or ``workers`` spawned processes, each pinned
  to one GPU or to a share of the CPU threads.
- ``ray`` (extra ``uebench[ray]``): Ray tasks on a local or multi-node cluster, with
  (fractional) GPU requests.
"""
from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

from registry import Registry

TaskFn = Callable[..., dict]


class ExecutorError(RuntimeError):
    """An executor cannot start (its extra is not installed, its cluster is unreachable); one line."""


class TaskLost(RuntimeError):
    """The process running a task died (killed, out of host memory); the task may be retried."""


class Executor:
    """Runs task functions. Subclasses implement `submit`, `wait` and `result`.

    ``capacity`` is how many tasks the scheduler keeps in flight: it submits no more than
    that, so the order it chooses (train cells of ready poisons first) is the order they run.
    """

    capacity: int = 1
    in_process: bool = False  # tasks run in the scheduler's process (a per-cell bar is possible)

    def submit(self, fn: TaskFn, job: dict, kind: str = "task") -> Hashable:
        """Start ``fn(job)``; return a handle."""
        raise NotImplementedError

    def wait(self, handles: list[Hashable]) -> list[Hashable]:
        """Block until at least one of ``handles`` is done; return the done ones."""
        raise NotImplementedError

    def result(self, handle: Hashable) -> dict:
        """The task's return value; re-raises its exception (`TaskLost` if its worker died)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release workers (idempotent)."""

    def describe(self) -> str:
        return type(self).__name__

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


EXECUTORS: Registry = Registry("executor", "bench.executors")

PLUGINS = ("local", "ray_executor")
"""The modules that register executors."""

__all__ = ["EXECUTORS", "PLUGINS", "Executor", "ExecutorError", "TaskFn", "TaskLost"]
