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

The ``filter`` norm is for class-wise convolutions (CUDA, `bench.perturbation.FilterPerturbation`),
which no additive budget describes: its budget is the largest off-peak tap of the kernels. The
validator checks the kernels the attack returned (peak tap 1, every other tap in [0, budget],
side at most the params' ``kernel_size``) and that every published image is either the clean one
or its class kernel's output (within one quantization level); L∞, L2 and PSNR are still
measured and reported.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from registry.lazy import lazy_import

if TYPE_CHECKING:
    import torch

    from bench.data import ImageData
    from bench.perturbation import AnyPerturbation
else:
    torch = lazy_import("torch")

Norm = Literal["linf", "l2", "l0", "filter"]
NORMS: tuple[str, ...] = ("linf", "l2", "l0", "filter")
_UNITS = {"linf": "/255", "l2": "", "l0": " px", "filter": ""}


class ThreatModelError(RuntimeError):
    """A published poison breaks its attack's declared threat model."""


@dataclass(frozen=True)
class ThreatModel:
    """``norm`` plus where the budget comes from: ``budget_field`` (a params field) or
    ``budget_value`` (fixed). Exactly one of the two is given.

    Units: L∞ budgets are in /255 pixel units (``epsilon: 8``); L2 budgets are on the [0, 1]
    scale over the whole image; L0 budgets count changed pixel positions per image; ``filter``
    budgets bound the off-peak kernel taps (``blur: 0.3``), and ``size_field`` names the params
    field holding the largest kernel side the attack may use.
    """

    norm: Norm = "linf"
    budget_field: str | None = "epsilon"
    budget_value: float | None = None
    size_field: str = "kernel_size"

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
    blur: float | None = None  # filter norm: the largest off-peak kernel tap (None for additive poisons)

    def of(self, norm: str) -> float:
        if norm == "filter":  # not measured (no kernels were checked): fails any budget
            return math.inf if self.blur is None else self.blur
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
    attack: str, threat: ThreatModel, params: Any, clean: "ImageData", poisoned: "ImageData", pert: "AnyPerturbation | None" = None
) -> PoisonStats:
    """Check shape, dtype, count, labels and the declared budget of the published images
    against the pristine ``clean`` ones; raise ThreatModelError on any breach. ``pert`` is
    what was published; the ``filter`` norm needs it (a `FilterPerturbation`: its kernels are
    the budget), an additive norm refuses a filter."""
    where = f"attack {attack!r}"
    from bench.perturbation import FilterPerturbation

    is_filter = isinstance(pert, FilterPerturbation)
    if (threat.norm == "filter") != is_filter:
        got = "a FilterPerturbation" if is_filter else "no filter kernels"
        raise ThreatModelError(f"{where}: its threat model is {threat.describe(params)}, but the harness was given {got} to check")
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
    if is_filter:
        stats = dataclasses.replace(stats, blur=check_kernels(where, threat, params, pert.kernels))
        check_filtered(where, clean, poisoned, pert)
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


def check_kernels(where: str, threat: ThreatModel, params: Any, kernels: "torch.Tensor") -> float:
    """The largest off-peak tap of ``kernels`` (K, k, k); ThreatModelError unless every kernel
    has its peak tap at 1, every other tap in [0, budget] and a side within ``size_field``."""
    size = getattr(params, threat.size_field, None)
    if not isinstance(size, int):
        raise ThreatModelError(f"{where}: a filter threat model needs the params field {threat.size_field!r} (the largest kernel side)")
    if kernels.dim() != 3 or kernels.shape[1] != kernels.shape[2] or not torch.isfinite(kernels).all():
        raise ThreatModelError(f"{where}: filter kernels must be finite (K, k, k), got shape {tuple(kernels.shape)}")
    if kernels.shape[-1] > size:
        raise ThreatModelError(f"{where}: filter kernels are {kernels.shape[-1]}x{kernels.shape[-1]}, larger than the declared {threat.size_field} {size}")
    flat = kernels.detach().flatten(1).double().cpu()
    if flat.numel() == 0:
        raise ThreatModelError(f"{where}: no filter kernels to check")
    peak, at = flat.max(1)
    wrong = torch.nonzero(((peak - 1).abs() > 1e-6) | (flat.min(1).values < 0)).flatten().tolist()
    if wrong:
        raise ThreatModelError(f"{where}: every filter kernel needs its peak tap at 1 and no negative tap; class {wrong[0]} has "
                               f"peak {float(peak[wrong[0]]):.4g}, min {float(flat[wrong[0]].min()):.4g} ({len(wrong)} such kernels)")
    rest = flat.scatter(1, at.view(-1, 1), -1.0)
    measured = max(0.0, float(rest.max())) if flat.shape[1] > 1 else 0.0
    if measured > threat.budget(params) + 1e-6:
        worst = int(rest.max(1).values.argmax())
        raise ThreatModelError(f"{where}: filter budget {threat.describe(params)} breached: measured {measured:.4g} (off-peak tap of class {worst})")
    return measured


def check_filtered(where: str, clean: "ImageData", poisoned: "ImageData", pert: Any, chunk: int = 4096) -> None:
    """Every published image is the clean one or its class kernel's output, within one level."""
    from bench.perturbation import filter_images

    bad, worst = 0, 0.0
    for s in range(0, len(clean), chunk):
        x, p = clean.x[s : s + chunk], poisoned.x[s : s + chunk]
        same = (x == p).flatten(1).all(1)
        dev = (p.float() - filter_images(x, clean.y[s : s + chunk], pert.kernels, pert.normalize)).abs().flatten(1).amax(1)
        off = ~same & (dev > 1.0 + 1e-3)
        bad += int(off.sum())
        worst = max(worst, float(dev[off].max()) if off.any() else 0.0)
    if bad:
        raise ThreatModelError(
            f"{where}: {bad} published images are neither clean nor their class filter's output (up to {worst:.4g} levels off)"
        )
