"""Plugin registries of uebench: attacks, defenses and datasets.

Each registry names its built-in package (whose ``PLUGINS`` lists the modules that register
into it) and its contract (the rules a registration must follow, checked when it happens).
Models are not here: they are timm models, and our CIFAR variants are registered into
timm's own registry (see `bench.models`); the ``uebench.models`` entry-point group only
imports third-party modules that call ``timm.models.register_model``.
"""
from registry.core import Entry, NoParams, Registry, RegistryError, one_line
from registry.lazy import lazy_import

ATTACKS: Registry = Registry("attack", "attacks", contract="bench.attack:CONTRACT")
DEFENSES: Registry = Registry("defense", "defenses", contract="bench.defense:CONTRACT")
DATASETS: Registry = Registry("dataset", "bench.datasets", contract="bench.data:CONTRACT")

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
