"""Everything a plugin author imports, from one place.

    from bench.api import ATTACKS, Attack, Perturbation, ThreatModel, lazy_import

An attack subclasses `Attack` and registers with a params model and a `ThreatModel`; a
defense subclasses `Defense` and overrides some of its hooks; a dataset subclasses `Dataset`.
The registries check each registration against these contracts when it happens. Importing
this module does not import torch (plugin modules stay cheap to list; use `lazy_import`).
See ``CONTRIBUTING.md`` for a worked example of each kind.
"""
from bench.attack import Attack, AttackContext
from bench.data import Dataset, ImageData, Splits
from bench.defense import Defense, DefenseStack, EpochState
from bench.perturbation import FilterPerturbation, Perturbation
from bench.threat import ThreatModel
from bench.train_config import TrainConfig
from registry import ATTACKS, DATASETS, DEFENSES, NoParams, RegistryError, lazy_import

__all__ = [
    "ATTACKS",
    "DATASETS",
    "DEFENSES",
    "Attack",
    "AttackContext",
    "Dataset",
    "Defense",
    "DefenseStack",
    "EpochState",
    "ImageData",
    "NoParams",
    "FilterPerturbation",
    "Perturbation",
    "RegistryError",
    "Splits",
    "ThreatModel",
    "TrainConfig",
    "lazy_import",
]
