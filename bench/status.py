"""What a run would do, from the plan and the results alone (driver side, no torch, no data).

`status` sorts the plan's cells into done / failed earlier / to do (after ``--only`` and
``--regenerate``), and finds the poisons the cells to do need: one per perturbation cache
key, each cached or to generate. `stale_rows` / `prune` deal with rows a matrix no longer
has (its config or a plugin's version changed).
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

from bench.cache import Cache, cache_key
from bench.plan import Cell, Plan, PoisonTask
from bench.records import PERTURBATION, DatasetFacts
from bench.results import ResultRow
from bench.store import ResultStore

FILTER_KEYS = ("attack", "attack_name", "defense", "arch", "seed", "dataset", "block")
"""What ``--only KEY=PATTERN`` can select on (``block``: a block's label; a cell two blocks
name matches either)."""


@dataclass
class PlanStatus:
    """The dry-run report, and the scheduler's starting point."""

    plan: Plan
    selected: list[Cell]  # after --only
    done: list[Cell]
    failed: list[Cell]  # failed earlier and skipped (empty with retry_failed)
    todo: list[Cell]
    poisons: list[PoisonTask]  # needed by the cells to do, one per perturbation key
    cached: list[PoisonTask]
    to_generate: list[PoisonTask]
    failed_rows: dict[str, ResultRow] = field(default_factory=dict)
    regenerate: set[str] = field(default_factory=set)  # perturbation keys to remake
    rerun: set[str] = field(default_factory=set)  # cells with an ok row that run again (--regenerate)
    baselines: int = 0  # clean-only poisons among the cells to do (nothing to generate)

    @property
    def replaces_rows(self) -> bool:
        """Whether the run writes new rows for cells that already have one."""
        return bool(self.rerun) or any(c.key in self.failed_rows for c in self.todo)


def cell_fields(c: Cell) -> dict[str, tuple[str, ...]]:
    """Each filter key's values for one cell (one each, but a cell's blocks may be several)."""
    t = c.poison
    return {
        "attack": (t.label,), "attack_name": (t.attack_name,), "defense": (c.defense_label,), "arch": (c.arch,),
        "seed": (str(t.seed),), "dataset": (t.dataset.name,), "block": c.blocks or ("",),
    }


def select(cells, only: dict[str, list[str]] | None) -> list[Cell]:
    """The cells matching every ``--only`` key (any of its patterns); all without filters."""
    if not only:
        return list(cells)
    match = lambda values, pats: any(fnmatch.fnmatchcase(v, p) for v in values for p in pats)
    return [c for c in cells if all(match(cell_fields(c)[k], pats) for k, pats in only.items())]


def regenerating(task: PoisonTask, patterns: list[str] | tuple[str, ...]) -> bool:
    """Whether ``--regenerate`` asks for this poison (by attack name or label, wildcards)."""
    if task.attack is None:
        return False
    return any(fnmatch.fnmatchcase(task.attack.name, p) or fnmatch.fnmatchcase(task.label, p) for p in patterns)


def perturbation_key(task: PoisonTask, facts: dict[str, DatasetFacts]) -> str:
    from bench.plan import dataset_key

    return cache_key(PERTURBATION, task.perturbation_spec(facts[dataset_key(task.dataset)].fingerprint))


def status(
    plan: Plan,
    store: ResultStore,
    facts: dict[str, DatasetFacts],
    cache: Cache,
    retry_failed: bool = False,
    regenerate: list[str] | tuple[str, ...] = (),
    only: dict[str, list[str]] | None = None,
) -> PlanStatus:
    """Which cells are done, failed, to do; which poisons they need and which are cached."""
    rows = store.rows()
    ok = {r.cell_hash for r in rows if r.status == "ok"}
    failed_rows = {r.cell_hash: r for r in rows if r.status == "failed"}
    selected = select(plan.cells, only)
    redo = {c.key for c in selected if regenerate and regenerating(c.poison, regenerate)}
    done = [c for c in selected if c.key in ok and c.key not in redo]
    failed = [c for c in selected if c.key in failed_rows and c.key not in redo and not retry_failed]
    skip = {c.key for c in done} | {c.key for c in failed}
    todo = [c for c in selected if c.key not in skip]
    seen: set[str] = set()
    poisons, cached, regen = [], [], set()
    baselines = set()
    for task in {c.poison.key: c.poison for c in todo}.values():
        if task.clean_only:
            baselines.add(task.key)
            continue
        key = perturbation_key(task, facts)
        if key in seen:
            continue
        seen.add(key)
        poisons.append(task)
        if regenerate and regenerating(task, regenerate):
            regen.add(key)
        elif cache.contains(PERTURBATION, key):
            cached.append(task)
    to_generate = [p for p in poisons if p not in cached]
    return PlanStatus(plan, selected, done, failed, todo, poisons, cached, to_generate, failed_rows, regen, redo & ok, len(baselines))


def stale_rows(plan: Plan, store: ResultStore) -> list[ResultRow]:
    """Rows in the matrix's results file whose cells the matrix no longer has (it was edited)."""
    keys = plan.keys()
    return [r for r in store.rows() if r.cell_hash not in keys]


def prune(plan: Plan, store: ResultStore) -> list[ResultRow]:
    """Remove `stale_rows` (and their curves) from the results; return what was removed."""
    return store.prune(plan.keys())
