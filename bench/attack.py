"""The attack plugin seam: what an attack is given and what it must return.

An attack is a class registered in `registry.ATTACKS` with a pydantic params model and a
declared `ThreatModel` (``threat=`` in the registration). The harness builds it with
validated params, calls `generate(train, ctx)` and gets a `Perturbation` back; it then
applies, quantizes and validates the perturbation itself, so no attack can publish
anything outside its declared budget.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from pydantic import BaseModel

from bench.threat import ThreatModel
from registry import ATTACKS
from registry.lazy import lazy_import

if TYPE_CHECKING:
    import torch

    from bench.data import ImageData
    from bench.perturbation import Perturbation
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
    """The threat model an attack declared at registration."""
    return ATTACKS.get(name).meta.get("threat", ThreatModel("none", None))
