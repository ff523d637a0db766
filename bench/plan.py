"""Expand a matrix into its DAG: poison tasks, and the train cells that depend on them.

A **poison task** is one published training set: (dataset, attack + params — including the
source arch of a transfer matrix —, seed, poison ratio, poisoned classes). Its expensive
part, the perturbation δ, depends only on (dataset, attack + params, seed): every ratio and
class restriction of the same attack shares one δ, and the poisoned-index set depends only
on (dataset, seed, ratio, classes). A poison task whose ``attack`` is None is the
**clean-only baseline**: the same index set, but the poisoned part is withheld instead of
perturbed (EM Table 2's D_c; Going Grayscale Table 4).

A **cell** trains one exploiter (defense stack × target arch) on one poison with the cell's
seed (the poison's). ``Cell.key`` is the resume key: it is computed from the config alone,
so it is the same on every machine and in every run.
"""
from __future__ import annotations

from dataclasses import dataclass

from bench.config import AttackSpec, DatasetSpec, DefenseSpec, Matrix, canonical_json, short_hash
from registry import ATTACKS, DATASETS, DEFENSES

CLEAN_ONLY = "clean-only"
"""Attack label and name of the clean-only baseline rows."""


@dataclass(frozen=True)
class PoisonTask:
    dataset: DatasetSpec
    attack: AttackSpec | None  # None: the clean-only baseline
    seed: int
    poison_ratio: float
    poison_classes: tuple[str, ...] = ()

    @property
    def clean_only(self) -> bool:
        return self.attack is None

    @property
    def partial(self) -> bool:
        """Whether only part of the train set is poisoned (so an index set is needed)."""
        return self.poison_ratio < 1.0 or bool(self.poison_classes)

    def spec(self, m: Matrix) -> dict:
        """Everything that determines the published training set (params with defaults)."""
        out = {
            "dataset": dataset_spec(self.dataset),
            "attack": None if self.attack is None else {"name": self.attack.name, "params": attack_params(self.attack), **_version(ATTACKS, self.attack.name)},
            "seed": self.seed,
            "poison_ratio": self.poison_ratio,
            "apply": m.apply.model_dump(mode="json"),
        }
        if self.poison_classes:
            out["poison_classes"] = list(self.poison_classes)
        return out

    def key(self, m: Matrix) -> str:
        return short_hash(self.spec(m), 16)

    def label(self, m: Matrix) -> str:
        """The leaderboard's attack label: the attack's, ``@class`` when restricted to classes."""
        base = CLEAN_ONLY if self.attack is None else m.attack_label(self.attack)
        return base + (f"@{'+'.join(self.poison_classes)}" if self.poison_classes else "")

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


@dataclass(frozen=True)
class Cell:
    poison: PoisonTask
    defense: tuple[DefenseSpec, ...]
    arch: str

    @property
    def seed(self) -> int:
        return self.poison.seed

    def spec(self, m: Matrix) -> dict:
        return {
            "poison": self.poison.spec(m),
            "defense": [{**d, **_version(DEFENSES, d["name"])} for d in defense_params(self.defense)],
            "arch": self.arch,
            "train": m.train.model_dump(mode="json"),
            "robust": None if m.robust is None else m.robust.model_dump(mode="json"),
        }

    def key(self, m: Matrix) -> str:
        return short_hash(self.spec(m), 16)


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
    return {
        "name": d.name,
        "params": DATASETS.validate(d.name, d.params).model_dump(mode="json"),
        "n_train": d.n_train,
        "n_test": d.n_test,
        "subset_seed": d.subset_seed,
    }


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


def poison_tasks(m: Matrix) -> list[PoisonTask]:
    """Every poison of the matrix, in execution order: dataset, seed, ratio, attack (baseline last)."""
    classes = tuple(m.poison_classes or ())
    attacks = expand_attacks(m)
    out = []
    for d in m.datasets:
        for seed in m.seeds:
            for ratio in m.ratios():
                out += [PoisonTask(d, a, seed, ratio, classes) for a in attacks]
                if m.clean_baseline and (ratio < 1.0 or classes):
                    out.append(PoisonTask(d, None, seed, ratio, classes))
    return out


def plan(m: Matrix) -> list[Cell]:
    """All cells in execution order: grouped by poison, then defense × target arch."""
    return [Cell(p, tuple(stack), arch) for p in poison_tasks(m) for stack in m.defenses for arch in m.archs]


def config_hash(m: Matrix) -> str:
    return short_hash(m.model_dump(mode="json"), 16)


__all__ = ["CLEAN_ONLY", "Cell", "PoisonTask", "plan", "poison_tasks", "expand_attacks", "config_hash", "canonical_json"]
