"""The attack plugin seam: what an attack is given, what it must return, how it registers.

An attack is a subclass of `Attack` registered in `registry.ATTACKS` with a pydantic params
model and a declared `ThreatModel` (``threat=``, required). The harness builds it with
validated params and calls ``generate(train, ctx)`` on a private copy of the training set
(an attack cannot change the data anyone else sees); it gets a `Perturbation` back, checks
it (`bench.perturbation.check_perturbation`), then applies, quantizes and validates it
itself against the pristine data, so no attack can publish anything outside its budget.

`CONTRACT` is what `registry.ATTACKS` checks at registration; plugin authors import
everything they need from `bench.api`.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from bench.threat import ThreatModel
from registry import ATTACKS, RegistryError
from registry.lazy import lazy_import

if TYPE_CHECKING:
    import torch

    from bench.data import ImageData
    from bench.perturbation import Perturbation
    from registry.core import Entry
else:
    torch = lazy_import("torch")


@dataclass
class AttackContext:
    """What the harness hands an attack: device, seed and the shared building blocks.

    ``make_model(arch)`` builds any registered (timm) model for this dataset, so an attack's
    source model is created exactly as an exploiter's; ``progress(done, total, **info)``
    reports long work (rounds) without the attack printing anything.
    """

    device: "torch.device"
    seed: int
    num_classes: int
    img_shape: tuple[int, int, int]
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("uebench.attack"))
    progress: Callable[..., None] = lambda *a, **k: None

    def make_model(self, arch: str, **kwargs: Any) -> "torch.nn.Module":
        from bench.models import create_model

        torch.manual_seed(self.seed)
        c, h, _ = self.img_shape
        return create_model(arch, num_classes=self.num_classes, in_chans=c, img_size=h, **kwargs).to(self.device)

    def generator(self, offset: int = 0) -> "torch.Generator":
        """A seeded generator on the attack's device (offset separates independent streams)."""
        return torch.Generator(device=self.device).manual_seed(self.seed * 1_000_003 + offset)


class Attack:
    """Base class of attack plugins; ``params`` is the validated params model."""

    def __init__(self, params: BaseModel):
        self.params = params

    @property
    def source_arch(self) -> str | None:
        """The model the attack optimizes against, if any (recorded as ``source_arch``)."""
        return getattr(self.params, "source_arch", None)

    def generate(self, train: "ImageData", ctx: AttackContext) -> "Perturbation":
        raise NotImplementedError


def threat_of(name: str) -> ThreatModel:
    """The threat model an attack declared at registration (every attack has one)."""
    return ATTACKS.get(name).meta["threat"]


class _AttackContract:
    """The rules of `registry.ATTACKS`: checked when a plugin registers, one line on a breach."""

    META = {"threat", "category", "preset_of"}

    def check(self, entry: "Entry") -> None:
        where = entry.label
        if not (isinstance(entry.factory, type) and issubclass(entry.factory, Attack)):
            raise RegistryError(f"{where}: must be a subclass of bench.api.Attack, got {entry.factory!r}")
        unknown = sorted(set(entry.meta) - self.META)
        if unknown:
            raise RegistryError(f"{where}: unknown registration keyword(s) {', '.join(unknown)} (allowed: {', '.join(sorted(self.META))})")
        threat = entry.meta.get("threat")
        if threat is None:
            raise RegistryError(
                f"{where}: declares no threat model; pass threat=ThreatModel('linf', 'epsilon') (norm and the params "
                "field holding the budget), or threat=ThreatModel.none() for an attack that changes nothing"
            )
        if not isinstance(threat, ThreatModel):
            raise RegistryError(f"{where}: threat must be a bench.api.ThreatModel, got {threat!r}")
        if threat.budget_field is not None and threat.budget_field not in entry.params.model_fields:
            fields = ", ".join(entry.params.model_fields) or "none"
            raise RegistryError(
                f"{where}: its threat model's budget field {threat.budget_field!r} is not a field of its params "
                f"{entry.params.__name__} (fields: {fields}); add the field or name the right one"
            )
        if threat.norm == "filter" and threat.size_field not in entry.params.model_fields:
            raise RegistryError(
                f"{where}: a filter threat model needs its params {entry.params.__name__} to have the field "
                f"{threat.size_field!r} (the largest kernel side); add it or pass size_field= to ThreatModel"
            )


CONTRACT = _AttackContract()
