"""Small records that cross between the driver and its workers (no tensors, JSON-able).

`DatasetFacts` is what the driver knows about a dataset without holding it (the dataset job
reports it); `PoisonFacts` is what a result row says about its poison. `PERTURBATION` and
`INDEX` are the cache kinds a poison is made of.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

PERTURBATION, INDEX = "perturbation", "index"
"""Cache kinds: an attack's δ (+ its stats), and a poisoned-index set."""


@dataclass(frozen=True)
class DatasetFacts:
    """A dataset as the driver sees it: identity, sizes and class names."""

    key: str
    name: str
    fingerprint: str  # full sha256 of train + test
    n_train: int
    n_test: int
    classes: tuple[str, ...]

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "DatasetFacts":
        return cls(**{**d, "classes": tuple(d["classes"])})


@dataclass(frozen=True)
class PoisonFacts:
    """What a result row reports about its poison."""

    threat: str
    epsilon: float | None
    linf: float | None = None
    l2: float | None = None
    psnr: float | None = None
    attack_stats: str = "{}"
    source_arch: str = ""
    poison_ratio: float = 1.0
