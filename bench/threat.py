"""Threat models and the validator that checks every published poison against its budget.

An attack declares, when it registers, its norm and where its budget comes from: a field of
its params (``ThreatModel("linf", "epsilon")``) or a fixed value (``ThreatModel.none()``:
a zero budget, for attacks that change nothing). There is no default and no fallback: an
attack without a threat model cannot register (`bench.attack.CONTRACT`), so no plugin can
publish an unbounded perturbation by forgetting to declare one.

The harness, not the attack, checks the *published* uint8 images (after quantization)
against the pristine clean images: shape, dtype, labels and the budget. A breach fails the
cell with a message naming the attack, the budget and the measured value. See
``docs/guarantees.md`` for what this does and does not protect against.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from registry.lazy import lazy_import

if TYPE_CHECKING:
    import torch

    from bench.data import ImageData
else:
    torch = lazy_import("torch")

Norm = Literal["linf", "l2", "l0"]
NORMS: tuple[str, ...] = ("linf", "l2", "l0")
_UNITS = {"linf": "/255", "l2": "", "l0": " px"}


class ThreatModelError(RuntimeError):
    """A published poison breaks its attack's declared threat model."""


@dataclass(frozen=True)
class ThreatModel:
    """``norm`` plus where the budget comes from: ``budget_field`` (a params field) or
    ``budget_value`` (fixed). Exactly one of the two is given.

    Units: L∞ budgets are in /255 pixel units (``epsilon: 8``); L2 budgets are on the [0, 1]
    scale over the whole image; L0 budgets count changed pixel positions per image.
    """

    norm: Norm = "linf"
    budget_field: str | None = "epsilon"
    budget_value: float | None = None

    def __post_init__(self) -> None:
        if self.norm not in NORMS:
            raise ValueError(f"threat norm must be one of {', '.join(NORMS)}, got {self.norm!r}")
        if self.budget_value is not None:
            object.__setattr__(self, "budget_field", None)
            if not (isinstance(self.budget_value, (int, float)) and math.isfinite(self.budget_value) and self.budget_value >= 0):
                raise ValueError(f"threat budget_value must be a finite number >= 0, got {self.budget_value!r}")
        elif not self.budget_field:
            raise ValueError("a threat model needs budget_field (a params field) or budget_value (a fixed budget)")

    @classmethod
    def none(cls) -> "ThreatModel":
        """The threat model of an attack that changes nothing: every change breaches it."""
        return cls("linf", None, 0.0)

    @property
    def is_zero(self) -> bool:
        return self.budget_value == 0

    def budget(self, params: Any = None) -> float:
        if self.budget_value is not None:
            return float(self.budget_value)
        return float(getattr(params, self.budget_field))

    def describe(self, params: Any = None) -> str:
        if self.is_zero:
            return "none"
        if params is None and self.budget_field is not None:
            return f"{self.norm} ({self.budget_field})"
        return f"{self.norm}={self.budget(params):g}{_UNITS[self.norm]}"


@dataclass(frozen=True)
class PoisonStats:
    """What the validator measured on the published images."""

    linf: float  # max |x' - x| in /255 units
    l2: float  # max per-image L2 on the [0, 1] scale
    l0: float  # max changed pixel positions per image
    psnr: float  # mean PSNR (dB) over poisoned images; inf when nothing changed
    changed: int  # images that differ from the clean ones

    def of(self, norm: str) -> float:
        return {"linf": self.linf, "l2": self.l2, "l0": self.l0}[norm]


def measure(clean: "torch.Tensor", poisoned: "torch.Tensor", chunk: int = 8192) -> PoisonStats:
    """Norms of ``poisoned - clean`` for uint8 (N, C, H, W) batches (chunked: bounded memory)."""
    n = int(clean.shape[0])
    linf, l2, l0, psnr_sum, changed = 0.0, 0.0, 0.0, 0.0, 0
    for s in range(0, n, chunk):
        d = poisoned[s : s + chunk].to(torch.int16) - clean[s : s + chunk].to(torch.int16)
        flat = d.reshape(d.shape[0], -1).float()
        per_linf = flat.abs().amax(dim=1)
        linf = max(linf, float(per_linf.max()))
        l2 = max(l2, float((flat / 255.0).norm(dim=1).max()))
        l0 = max(l0, float((d != 0).any(dim=1).reshape(d.shape[0], -1).sum(dim=1).max()))
        hit = per_linf > 0
        if hit.any():
            mse = (flat[hit] / 255.0).pow(2).mean(dim=1)
            psnr_sum += float((10 * torch.log10(1.0 / mse)).sum())
            changed += int(hit.sum())
    return PoisonStats(linf=linf, l2=l2, l0=l0, psnr=psnr_sum / changed if changed else math.inf, changed=changed)


def validate_poison(
    attack: str, threat: ThreatModel, params: Any, clean: "ImageData", poisoned: "ImageData"
) -> PoisonStats:
    """Check shape, dtype, count, labels and the declared budget of the published images
    against the pristine ``clean`` ones; raise ThreatModelError on any breach."""
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
    measured = stats.of(threat.norm)
    # L∞ and L0 are integers after quantization; L2 may grow by rounding, half a level per value.
    slack = 1e-6
    if threat.norm == "l2":
        slack += 0.5 / 255 * math.sqrt(clean.x[0].numel())
    if threat.is_zero and stats.changed:
        raise ThreatModelError(
            f"{where}: declares no perturbation, but {stats.changed} published images differ from the clean ones "
            f"(max change {stats.linf:g}/255)"
        )
    if measured > budget + slack:
        raise ThreatModelError(
            f"{where}: {threat.norm} budget {threat.describe(params)} breached: measured {measured:.4g}"
        )
    return stats
