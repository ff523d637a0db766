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

A `FilterPerturbation` is not additive: it holds one k×k kernel per class (CUDA), and the
harness itself convolves every image of class y with kernel y, normalizes, quantizes with the
same rounding and keeps the unmasked images clean; its threat model is ``filter``
(`bench.threat`), which bounds the kernels and checks the published images are their output.
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


#: How a `FilterPerturbation`'s convolved image is brought back to [0, 1].
FILTER_NORMALIZE: tuple[str, ...] = ("max", "sum", "clip")


@dataclass
class FilterPerturbation:
    """What a class-wise convolution attack returns: ``kernels`` (K, k, k) float32, k odd,
    taps in [0, 1]. Image i is replaced by kernels[yᵢ] convolved with it, the same kernel on
    every channel, zero padding (the size is kept), then ``normalize``:

    - ``max`` (CUDA paper and code): divide each image by its own maximum over channels and
      pixels, so its brightest value becomes 1 (an all-black result stays black);
    - ``sum``: divide the kernel by the sum of its taps (a weighted average: brightness kept);
    - ``clip``: clamp to [0, 1].
    """

    kernels: "torch.Tensor"
    mode: Literal["class"] = "class"
    normalize: str = "max"
    stats: dict = field(default_factory=dict)

    def per_sample(self, y: "torch.Tensor") -> "torch.Tensor":
        """The kernel of each image, (n, k, k)."""
        return self.kernels[y.to(self.kernels.device)]


AnyPerturbation = Perturbation | FilterPerturbation


def filter_images(x: "torch.Tensor", y: "torch.Tensor", kernels: "torch.Tensor", normalize: str = "max") -> "torch.Tensor":
    """uint8 images ``x`` (n, C, H, W) of labels ``y`` through their class's kernel: float on
    the 0..255 scale, not yet quantized (the harness publishes it, the validator checks it)."""
    xf = x.float() / 255.0
    out = torch.zeros_like(xf)
    k = int(kernels.shape[-1])
    c = int(x.shape[1])
    for cls in torch.unique(y).tolist():
        idx = torch.nonzero(y == cls).flatten()
        w = kernels[cls].to(xf.device, torch.float32)
        if normalize == "sum":
            w = w / w.sum().clamp_min(1e-12)
        out[idx] = torch.nn.functional.conv2d(xf[idx], w.expand(c, 1, k, k), padding=k // 2, groups=c)
    if normalize == "max":
        out = out / out.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1, 1)
    return (out * 255.0).clamp(0.0, 255.0)


class PerturbationError(ValueError):
    """An attack returned something that is not a valid perturbation; the message is one line."""


def check_perturbation(attack: str, pert: object, train: "ImageData") -> None:
    """What ``generate`` returned is a `Perturbation` the harness can publish for ``train``:
    a float tensor of the right shape for its mode, finite, on the [0, 1] scale (for a
    `FilterPerturbation`: one finite k×k kernel per class, k odd, taps in [0, 1])."""
    where = f"attack {attack!r}"
    if isinstance(pert, FilterPerturbation):
        return _check_filter(where, pert, train)
    if not isinstance(pert, Perturbation):
        raise PerturbationError(
            f"{where}: generate() must return a bench.api.Perturbation (or a FilterPerturbation), got {type(pert).__name__}"
        )
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


def _check_filter(where: str, pert: FilterPerturbation, train: "ImageData") -> None:
    if pert.mode != "class":
        raise PerturbationError(f"{where}: FilterPerturbation.mode must be 'class', got {pert.mode!r}")
    if pert.normalize not in FILTER_NORMALIZE:
        raise PerturbationError(f"{where}: FilterPerturbation.normalize must be one of {', '.join(FILTER_NORMALIZE)}, got {pert.normalize!r}")
    if not isinstance(pert.stats, dict):
        raise PerturbationError(f"{where}: FilterPerturbation.stats must be a dict, got {type(pert.stats).__name__}")
    w = pert.kernels
    if not isinstance(w, torch.Tensor) or not w.is_floating_point():
        raise PerturbationError(f"{where}: FilterPerturbation.kernels must be a float torch.Tensor, got {getattr(w, 'dtype', type(w).__name__)}")
    k = int(w.shape[-1]) if w.dim() == 3 else 0
    if w.dim() != 3 or tuple(w.shape) != (train.num_classes, k, k) or k % 2 == 0 or k > min(train.x.shape[2:]):
        raise PerturbationError(
            f"{where}: kernels must have shape ({train.num_classes}, k, k) (one per class, k odd, k <= the image side), got {tuple(w.shape)}"
        )
    bad = int((~torch.isfinite(w)).sum())
    if bad:
        raise PerturbationError(f"{where}: the kernels have {bad} NaN or infinite values")
    if float(w.min()) < 0 or float(w.max()) > 1:
        raise PerturbationError(f"{where}: kernel taps must lie in [0, 1], got [{float(w.min()):g}, {float(w.max()):g}]")


def apply_perturbation(
    data: "ImageData",
    pert: AnyPerturbation,
    how: ApplyConfig = ApplyConfig(),
    mask: "torch.Tensor | None" = None,
    chunk: int = 8192,
) -> "ImageData":
    """Publish ``data`` poisoned by ``pert`` as uint8; only images where ``mask`` is True change."""
    if isinstance(pert, FilterPerturbation):
        return _apply_filter(data, pert, how, mask, chunk)
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


def _apply_filter(data: "ImageData", pert: FilterPerturbation, how: ApplyConfig, mask: "torch.Tensor | None", chunk: int) -> "ImageData":
    """Each image through its class's kernel, normalized and quantized with ``how``'s rounding."""
    if not torch.isfinite(pert.kernels).all():
        raise ValueError("filter kernels contain NaN or inf")
    rounding = how.resolved_rounding()
    out = data.x.clone()
    for s in range(0, len(data), chunk):
        sl = slice(s, s + chunk)
        p = filter_images(data.x[sl], data.y[sl], pert.kernels, pert.normalize)
        p = (p.round() if rounding == "round" else p.floor()).to(torch.uint8)
        if mask is not None:
            p = torch.where(mask[sl].to(p.device).view(-1, 1, 1, 1), p, data.x[sl])
        out[sl] = p
    return data.with_images(out)
