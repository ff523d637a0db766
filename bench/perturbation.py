"""Perturbations and how the harness publishes them as uint8 images.

An attack returns a float δ on the [0, 1] scale, sample-wise (N, C, H, W) or class-wise
(K, C, H, W); `check_perturbation` refuses anything else with one line saying what was
expected. The harness, not the attack, applies it, because the papers and their code
disagree on how (``docs/algorithms/publishing.md``):

- ``signed`` (paper, default): x' = clip(x + δ, 0, 1), quantized to uint8.
- ``rectified`` (official EM code): δ·255 is first clamped to [0, 255], which zeroes every
  negative value, then added and cast with truncation. Reproduces the released numbers.

Rounding ``auto`` means round-to-nearest for ``signed`` and floor (numpy's astype) for
``rectified``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from bench.schema import StrictModel
from registry.lazy import lazy_import

if TYPE_CHECKING:
    import torch

    from bench.data import ImageData
else:
    torch = lazy_import("torch")


class ApplyConfig(StrictModel):
    """How a perturbation becomes published uint8 images."""
    mode: Literal["signed", "rectified"] = "signed"
    rounding: Literal["auto", "round", "floor"] = "auto"

    def resolved_rounding(self) -> str:
        if self.rounding != "auto":
            return self.rounding
        return "round" if self.mode == "signed" else "floor"


@dataclass
class Perturbation:
    """What an attack returns. ``delta`` is float32 on the [0, 1] scale.

    ``stats`` carries the attack's own bookkeeping (rounds used, final source accuracy, …),
    which ends up in the result row.
    """

    delta: "torch.Tensor"
    mode: Literal["sample", "class"] = "sample"
    stats: dict = field(default_factory=dict)

    def per_sample(self, y: "torch.Tensor") -> "torch.Tensor":
        """δ for each image: itself when sample-wise, δ[y] when class-wise."""
        if self.mode == "class":
            return self.delta[y.to(self.delta.device)]
        return self.delta


class PerturbationError(ValueError):
    """An attack returned something that is not a valid perturbation; the message is one line."""


def check_perturbation(attack: str, pert: object, train: "ImageData") -> None:
    """What ``generate`` returned is a `Perturbation` the harness can publish for ``train``:
    a float tensor of the right shape for its mode, finite, on the [0, 1] scale."""
    where = f"attack {attack!r}"
    if not isinstance(pert, Perturbation):
        raise PerturbationError(f"{where}: generate() must return a bench.api.Perturbation, got {type(pert).__name__}")
    if pert.mode not in ("sample", "class"):
        raise PerturbationError(f"{where}: Perturbation.mode must be 'sample' or 'class', got {pert.mode!r}")
    if not isinstance(pert.stats, dict):
        raise PerturbationError(f"{where}: Perturbation.stats must be a dict, got {type(pert.stats).__name__}")
    d = pert.delta
    if not isinstance(d, torch.Tensor):
        raise PerturbationError(f"{where}: Perturbation.delta must be a torch.Tensor, got {type(d).__name__}")
    if not d.is_floating_point():
        raise PerturbationError(f"{where}: δ must be a float tensor on the [0, 1] scale, got dtype {d.dtype}")
    rows, what = (len(train), "one per image") if pert.mode == "sample" else (train.num_classes, "one per class")
    want = (rows, *train.x.shape[1:])
    if tuple(d.shape) != want:
        raise PerturbationError(f"{where}: {pert.mode}-wise δ must have shape {want} ({what}), got {tuple(d.shape)}")
    bad = int((~torch.isfinite(d)).sum())
    if bad:
        raise PerturbationError(f"{where}: δ has {bad} NaN or infinite values")
    top = float(d.abs().max()) if d.numel() else 0.0
    if top > 1.0:
        raise PerturbationError(
            f"{where}: δ must be on the [0, 1] scale (|δ| <= 1), got max |δ| = {top:g}; divide a δ in pixel units by 255"
        )


def apply_perturbation(
    data: "ImageData",
    pert: Perturbation,
    how: ApplyConfig = ApplyConfig(),
    mask: "torch.Tensor | None" = None,
    chunk: int = 8192,
) -> "ImageData":
    """Publish ``data`` poisoned by ``pert`` as uint8; only images where ``mask`` is True change."""
    if pert.mode == "sample" and pert.delta.shape[0] != len(data):
        raise ValueError(f"sample-wise δ has {pert.delta.shape[0]} rows for {len(data)} images")
    if not torch.isfinite(pert.delta).all():
        raise ValueError("perturbation contains NaN or inf")
    rounding = how.resolved_rounding()
    out = data.x.clone()
    for s in range(0, len(data), chunk):
        sl = slice(s, s + chunk)
        x = data.x[sl].float()
        noise = pert.per_sample(data.y[sl]).to(x.device).float() * 255.0
        if how.mode == "rectified":
            noise = noise.clamp(0.0, 255.0)
        p = (x + noise).clamp(0.0, 255.0)
        p = p.round() if rounding == "round" else p.floor()
        p = p.to(torch.uint8)
        if mask is not None:
            m = mask[sl].to(p.device).view(-1, 1, 1, 1)
            p = torch.where(m, p, data.x[sl])
        out[sl] = p
    return data.with_images(out)
