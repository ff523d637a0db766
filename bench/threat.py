"""Threat models and the validator that checks every published poison against its budget.

An attack declares its norm and which params field holds the budget; the harness, not the
attack, checks the *published* uint8 images (after quantization) against it. A breach fails
the cell with a message naming the attack, the budget and the measured value.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from registry.lazy import lazy_import

if TYPE_CHECKING:
    import torch

    from bench.data import ImageData
else:
    torch = lazy_import("torch")

Norm = Literal["linf", "l2", "l0", "none"]


class ThreatModelError(RuntimeError):
    """A published poison breaks its attack's declared threat model."""


@dataclass(frozen=True)
class ThreatModel:
    """``norm`` and the params field holding the budget.

    Units: L∞ budgets are in /255 pixel units (``epsilon: 8``); L2 budgets are on the [0, 1]
    scale over the whole image; L0 budgets count changed pixel positions per image.
    """

    norm: Norm = "linf"
    budget_field: str | None = "epsilon"

    def budget(self, params) -> float:
        if self.norm == "none" or self.budget_field is None:
            return math.inf
        return float(getattr(params, self.budget_field))

    def describe(self, params=None) -> str:
        if self.norm == "none":
            return "none"
        b = f"={self.budget(params):g}" if params is not None else ""
        unit = {"linf": "/255", "l2": "", "l0": " px"}[self.norm]
        return f"{self.norm}{b}{unit}" if b else f"{self.norm} ({self.budget_field})"


@dataclass(frozen=True)
class PoisonStats:
    """What the validator measured on the published images."""

    linf: float  # max |x' - x| in /255 units
    l2: float  # max per-image L2 on the [0, 1] scale
    l0: float  # max changed pixel positions per image
    psnr: float  # mean PSNR (dB) over poisoned images; inf when nothing changed
    changed: int  # images that differ from the clean ones


def measure(clean: "torch.Tensor", poisoned: "torch.Tensor") -> PoisonStats:
    """Norms of ``poisoned - clean`` for uint8 (N, C, H, W) batches."""
    d = poisoned.to(torch.int16) - clean.to(torch.int16)
    n = d.shape[0]
    flat = d.reshape(n, -1).float()
    linf = flat.abs().amax(dim=1)
    l2 = (flat / 255.0).norm(dim=1)
    l0 = (d != 0).any(dim=1).reshape(n, -1).sum(dim=1).float()
    changed = linf > 0
    mse = (flat / 255.0).pow(2).mean(dim=1)[changed]
    psnr = float((10 * torch.log10(1.0 / mse)).mean()) if changed.any() else math.inf
    return PoisonStats(
        linf=float(linf.max()) if n else 0.0,
        l2=float(l2.max()) if n else 0.0,
        l0=float(l0.max()) if n else 0.0,
        psnr=psnr,
        changed=int(changed.sum()),
    )


def validate_poison(
    attack: str, threat: ThreatModel, params, clean: "ImageData", poisoned: "ImageData"
) -> PoisonStats:
    """Check shape, dtype, count, labels and the declared budget; raise ThreatModelError on a breach."""
    where = f"attack {attack!r}"
    if poisoned.x.dtype != torch.uint8:
        raise ThreatModelError(f"{where}: published images must be uint8, got {poisoned.x.dtype}")
    if tuple(poisoned.x.shape) != tuple(clean.x.shape):
        raise ThreatModelError(
            f"{where}: published shape {tuple(poisoned.x.shape)} differs from the clean {tuple(clean.x.shape)}"
        )
    if not torch.equal(poisoned.y.cpu(), clean.y.cpu()):
        n = int((poisoned.y.cpu() != clean.y.cpu()).sum())
        raise ThreatModelError(f"{where}: {n} labels were changed; availability attacks keep labels")
    stats = measure(clean.x, poisoned.x)
    budget = threat.budget(params)
    measured = {"linf": stats.linf, "l2": stats.l2, "l0": stats.l0}.get(threat.norm, 0.0)
    # L∞ and L0 are integers after quantization; L2 may grow by rounding, half a level per value.
    slack = 1e-6
    if threat.norm == "l2":
        slack += 0.5 / 255 * math.sqrt(clean.x[0].numel())
    if measured > budget + slack:
        raise ThreatModelError(
            f"{where}: {threat.norm} budget {threat.describe(params)} breached: measured {measured:.4g}"
        )
    return stats
