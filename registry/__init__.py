"""Plugin registries of uebench: attacks, defenses and datasets.

Models are not here: they are timm models, and our CIFAR variants are registered into
timm's own registry (see `bench.models`); the ``uebench.models`` entry-point group only
imports third-party modules that call ``timm.models.register_model``.
"""
from registry.core import Entry, NoParams, Registry, RegistryError, one_line
from registry.lazy import lazy_import

ATTACKS: Registry = Registry("attack", "attacks")
DEFENSES: Registry = Registry("defense", "defenses")
DATASETS: Registry = Registry("dataset", "bench.datasets")

__all__ = [
    "ATTACKS",
    "DATASETS",
    "DEFENSES",
    "Entry",
    "NoParams",
    "Registry",
    "RegistryError",
    "lazy_import",
    "one_line",
]
