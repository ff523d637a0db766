"""Expand a matrix into its cells, grouped by the poison each one trains on.

A poison is determined by (dataset, attack + params, seed, poison ratio, how it is applied);
a cell adds the defense stack, the exploiter arch and the training settings. Poisons are
generated once and shared by every cell that needs them (all defenses, all target archs).
"""
from __future__ import annotations

from dataclasses import dataclass

from bench.config import AttackSpec, DatasetSpec, DefenseSpec, Matrix, canonical_json, short_hash
from registry import ATTACKS, DATASETS, DEFENSES


@dataclass(frozen=True)
class PoisonTask:
    dataset: DatasetSpec
    attack: AttackSpec
    seed: int
    poison_ratio: float

    def spec(self, m: Matrix) -> dict:
        """Everything that determines the published poisoned images (params with defaults)."""
        return {
            "dataset": dataset_spec(self.dataset),
            "attack": {"name": self.attack.name, "params": attack_params(self.attack)},
            "seed": self.seed,
            "poison_ratio": self.poison_ratio,
            "apply": m.apply.model_dump(mode="json"),
        }

    def key(self, m: Matrix) -> str:
        return short_hash(self.spec(m), 16)


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
            "defense": defense_params(self.defense),
            "arch": self.arch,
            "train": m.train.model_dump(mode="json"),
            "robust": None if m.robust is None else m.robust.model_dump(mode="json"),
        }

    def key(self, m: Matrix) -> str:
        return short_hash(self.spec(m), 16)


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


def plan(m: Matrix) -> list[Cell]:
    """All cells in execution order: dataset, seed, attack (one poison each), then defense × arch."""
    cells = []
    for d in m.datasets:
        for seed in m.seeds:
            for a in m.attacks:
                poison = PoisonTask(d, a, seed, m.poison_ratio)
                for stack in m.defenses:
                    for arch in m.archs:
                        cells.append(Cell(poison, tuple(stack), arch))
    return cells


def config_hash(m: Matrix) -> str:
    return short_hash(m.model_dump(mode="json"), 16)


__all__ = ["Cell", "PoisonTask", "plan", "config_hash", "canonical_json"]
