"""Expand a matrix into its DAG: poison tasks, and the train cells that depend on them.

A **poison task** is one published training set: (dataset, attack + params — including the
source arch of a transfer matrix —, seed, poison ratio, poisoned classes). Its expensive
part, the perturbation δ, depends only on (dataset, attack + params, seed): every ratio and
class restriction of the same attack shares one δ, and the poisoned-index set depends only
on (dataset, seed, ratio, classes). A poison task whose ``attack`` is None is the
**clean-only baseline**: the same index set, but the poisoned part is withheld instead of
perturbed (EM Table 2's D_c; Going Grayscale Table 4).

A **cell** trains one exploiter (defense stack × target arch) on one poison with the cell's
seed (the poison's). Both are frozen records that carry their resume key and leaderboard
label, computed once here from the config alone: the same on every machine and in every
run, and the only thing a worker needs to know about the matrix (`RunSettings` holds the
rest). Planning validates each distinct plugin spec once, so a matrix of 10,000 cells plans
in about a second.
"""
from __future__ import annotations

from functools import cached_property
from typing import Any

from pydantic import BaseModel, ConfigDict

from bench.config import AttackSpec, DatasetSpec, DefenseSpec, Matrix, canonical_json, short_hash
from bench.perturbation import ApplyConfig
from bench.train_config import RobustEvalConfig, TrainConfig
from registry import ATTACKS, DATASETS, DEFENSES

CLEAN_ONLY = "clean-only"
"""Attack label and name of the clean-only baseline rows."""


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PoisonTask(_Frozen):
    """One published training set; ``key`` is its resume/grouping key, ``label`` its leaderboard name."""

    dataset: DatasetSpec
    attack: AttackSpec | None  # None: the clean-only baseline
    seed: int
    poison_ratio: float
    poison_classes: tuple[str, ...] = ()
    key: str
    label: str

    @property
    def clean_only(self) -> bool:
        return self.attack is None

    @property
    def partial(self) -> bool:
        """Whether only part of the train set is poisoned (so an index set is needed)."""
        return self.poison_ratio < 1.0 or bool(self.poison_classes)

    @property
    def attack_name(self) -> str:
        return CLEAN_ONLY if self.attack is None else self.attack.name

    def perturbation_spec(self, fingerprint: str) -> dict:
        """Cache-key input of δ: what the attack sees (not the ratio, classes or apply mode)."""
        assert self.attack is not None
        entry = ATTACKS.get(self.attack.name)
        return {
            "attack": self.attack.name,
            "params": attack_params(self.attack),
            "plugin": {"version": entry.version, "source": entry.source},
            "dataset": fingerprint,
            "seed": self.seed,
        }

    def index_spec(self, fingerprint: str) -> dict:
        """Cache-key input of the poisoned-index set (shared by every attack and the baseline)."""
        return {
            "dataset": fingerprint,
            "poison_ratio": self.poison_ratio,
            "poison_classes": list(self.poison_classes),
            "seed": self.seed,
            "method": "stratified",
        }


class Cell(_Frozen):
    """One exploiter (defense stack × arch) trained on one poison. ``spec`` is the canonical
    JSON of everything that determines its number; ``key`` is its sha256[:16]. The row keeps
    ``spec``, so a submitted row can be re-checked and re-run from itself."""

    poison: PoisonTask
    defense: tuple[DefenseSpec, ...]
    arch: str
    key: str
    defense_label: str
    spec: str
    blocks: tuple[str, ...] = ()  # the labels of the matrix's blocks that name it (not part of spec)

    @property
    def seed(self) -> int:
        return self.poison.seed


class RunSettings(_Frozen):
    """What a worker needs from the matrix besides its task: the matrix-wide settings."""

    matrix: str
    config_hash: str
    train: TrainConfig
    apply: ApplyConfig
    robust: RobustEvalConfig | None
    device: str


class Plan:
    """A matrix expanded: its cells in execution order, its poisons, its settings."""

    def __init__(self, matrix: Matrix, cells: list[Cell]):
        self.matrix = matrix
        self.cells: tuple[Cell, ...] = tuple(cells)
        self.settings = RunSettings(
            matrix=matrix.name, config_hash=config_hash(matrix), train=matrix.train, apply=matrix.apply,
            robust=matrix.robust, device=matrix.device,
        )

    @cached_property
    def by_key(self) -> dict[str, Cell]:
        return {c.key: c for c in self.cells}

    @cached_property
    def poisons(self) -> dict[str, PoisonTask]:
        """Poison tasks by key, in execution order."""
        return {c.poison.key: c.poison for c in self.cells}

    def keys(self) -> set[str]:
        return set(self.by_key)


def _version(registry, name: str) -> dict:
    """A plugin's version as part of a cell key: a plugin that changes what its params compute
    bumps its version, and its cells are then not "done". Version "1" adds nothing, so keys of
    unversioned plugins stay what they were."""
    v = registry.get(name).version
    return {} if v == "1" else {"version": v}


def attack_params(a: AttackSpec) -> dict:
    return ATTACKS.validate(a.name, a.params).model_dump(mode="json")


def defense_params(stack) -> list[dict]:
    return [{"name": d.name, "params": DEFENSES.validate(d.name, d.params).model_dump(mode="json")} for d in stack]


def dataset_spec(d: DatasetSpec) -> dict:
    out = {
        "name": d.name,
        "params": DATASETS.validate(d.name, d.params).model_dump(mode="json"),
        "n_train": d.n_train,
        "n_test": d.n_test,
        "subset_seed": d.subset_seed,
    }
    if d.holdout:  # only when used: specs (and keys) without a holdout stay what they were
        out["holdout"] = d.holdout
    return out


def dataset_key(d: DatasetSpec) -> str:
    """Identifies a dataset spec (its subset included) among the matrix's datasets."""
    return short_hash(dataset_spec(d), 16)


def expand_attacks(m: Matrix) -> list[AttackSpec]:
    """The attacks with ``source_archs`` applied: one copy per source for attacks that have one."""
    if m.source_archs is None:
        return list(m.attacks)
    out = []
    for a in m.attacks:
        if "source_arch" in ATTACKS.get(a.name).params.model_fields:
            for src in m.source_archs:
                label = f"{a.label}@{src}" if a.label else None
                out.append(a.model_copy(update={"params": {**a.params, "source_arch": src}, "label": label}))
        else:
            out.append(a)
    return out


def _attack_spec(a: AttackSpec | None) -> dict | None:
    if a is None:
        return None
    return {"name": a.name, "params": attack_params(a), **_version(ATTACKS, a.name)}


def plan(m: Matrix) -> Plan:
    """All cells in execution order: dataset, seed, ratio, attack (baseline last), then
    defense × target arch, block after block (a cell two blocks share runs once). Every
    distinct spec is validated and serialized once."""
    if m.blocks is None:
        return Plan(m, _cells(m))
    cells: dict[str, Cell] = {}
    for label, sub in zip(m.block_labels(), m.matrices()):
        for c in _cells(sub):
            first = cells.setdefault(c.key, c)
            cells[c.key] = first.model_copy(update={"blocks": (*first.blocks, label)})
    return Plan(m, list(cells.values()))


def _cells(m: Matrix) -> list[Cell]:
    classes = tuple(m.poison_classes or ())
    attacks: list[AttackSpec | None] = list(expand_attacks(m))
    apply = m.apply.model_dump(mode="json")
    attack_specs = [_attack_spec(a) for a in attacks]
    attack_labels = [m.attack_label(a) for a in attacks]
    stacks = [
        (tuple(stack), [{**d, **_version(DEFENSES, d["name"])} for d in defense_params(stack)], m.defense_label(stack))
        for stack in m.defenses
    ]
    train = m.train.model_dump(mode="json")
    robust = None if m.robust is None else m.robust.model_dump(mode="json")
    cells: list[Cell] = []
    for d in m.datasets:
        dspec = dataset_spec(d)
        for seed in m.seeds:
            for ratio in m.ratios():
                todo: list[tuple[AttackSpec | None, dict | None, str]] = list(zip(attacks, attack_specs, attack_labels))
                if m.clean_baseline and (ratio < 1.0 or classes):
                    todo.append((None, None, CLEAN_ONLY))
                for a, aspec, label in todo:
                    pspec: dict[str, Any] = {"dataset": dspec, "attack": aspec, "seed": seed, "poison_ratio": ratio, "apply": apply}
                    if classes:
                        pspec["poison_classes"] = list(classes)
                    task = PoisonTask(
                        dataset=d, attack=a, seed=seed, poison_ratio=ratio, poison_classes=classes,
                        key=short_hash(pspec, 16), label=label + (f"@{'+'.join(classes)}" if classes else ""),
                    )
                    # the poison spec is serialized once and spliced into every cell spec of it
                    pjson = canonical_json(pspec)
                    for stack, dparams, dlabel in stacks:
                        for arch in m.archs:
                            spec = cell_json(pjson, dparams, arch, train, robust)
                            cells.append(Cell(poison=task, defense=stack, arch=arch, key=cell_key(spec), defense_label=dlabel, spec=spec))
    return cells


def cell_json(pjson: str, defense: list[dict], arch: str, train: dict, robust: dict | None) -> str:
    """The cell's spec, the canonical JSON of {poison, defense, arch, train, robust}: the keys in
    sorted order, as `canonical_json` writes the whole dict (the poison part is spliced in)."""
    return (
        '{"arch":' + canonical_json(arch) + ',"defense":' + canonical_json(defense) + ',"poison":' + pjson
        + ',"robust":' + canonical_json(robust) + ',"train":' + canonical_json(train) + "}"
    )


def cell_key(spec: str) -> str:
    """The resume key of a cell: sha256[:16] of its spec."""
    import hashlib

    return hashlib.sha256(spec.encode()).hexdigest()[:16]


def config_hash(m: Matrix) -> str:
    return short_hash(m.model_dump(mode="json"), 16)


def settings_of(m: Matrix) -> RunSettings:
    return Plan(m, []).settings


__all__ = [
    "CLEAN_ONLY", "Cell", "Plan", "PoisonTask", "RunSettings", "attack_params", "config_hash", "dataset_key",
    "dataset_spec", "defense_params", "expand_attacks", "plan",
]
