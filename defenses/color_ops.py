"""Batched colour operations on float images in [0, 1] with a factor per image.

torchvision's ``ColorJitter`` draws one set of factors per call, so on a batched tensor every
image in the batch would get the same jitter; the reference pipelines call it per image.
These functions take a factor per image and do the whole batch in a few tensor ops, with
torchvision's formulas: brightness scales, contrast blends with the image's mean luma,
saturation blends with the luma image, hue rotates H in HSV. Luma uses torchvision's float
weights (0.2989, 0.587, 0.114). Single-channel images have no saturation or hue.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from bench.color import luma
from registry.lazy import lazy_import

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_import("torch")

# For HSV → RGB: which of (v, q, p, t) each of R, G, B takes in each sextant i = floor(6h).
_SEXTANT = ((0, 1, 2, 2, 3, 0), (3, 0, 0, 1, 2, 2), (2, 2, 3, 0, 0, 1))


def _per_image(f: "torch.Tensor") -> "torch.Tensor":
    return f.view(-1, 1, 1, 1)


def _blend(x: "torch.Tensor", other: "torch.Tensor", f: "torch.Tensor") -> "torch.Tensor":
    f = _per_image(f)
    return (f * x + (1 - f) * other).clamp_(0.0, 1.0)


def adjust_brightness(x: "torch.Tensor", f: "torch.Tensor") -> "torch.Tensor":
    return (x * _per_image(f)).clamp_(0.0, 1.0)


def adjust_contrast(x: "torch.Tensor", f: "torch.Tensor") -> "torch.Tensor":
    return _blend(x, luma(x).mean(dim=(1, 2, 3), keepdim=True), f)


def adjust_saturation(x: "torch.Tensor", f: "torch.Tensor") -> "torch.Tensor":
    return x if x.shape[1] == 1 else _blend(x, luma(x), f)


def rgb_to_hsv(x: "torch.Tensor") -> "torch.Tensor":
    """Hexcone HSV (as Python's colorsys), every channel in [0, 1]."""
    r, g, b = x.unbind(1)
    maxc, minc = x.amax(1), x.amin(1)
    chroma = maxc - minc
    gray = chroma == 0
    safe_chroma = torch.where(gray, torch.ones_like(chroma), chroma)
    s = chroma / torch.where(gray, torch.ones_like(maxc), maxc)
    rc, gc, bc = (maxc - r) / safe_chroma, (maxc - g) / safe_chroma, (maxc - b) / safe_chroma
    is_r = maxc == r
    is_g = (maxc == g) & ~is_r
    h = torch.where(is_r, bc - gc, torch.where(is_g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.where(gray, torch.zeros_like(h), h)
    h = torch.remainder(h / 6.0, 1.0)
    return torch.stack([h, s, maxc], 1)


def hsv_to_rgb(hsv: "torch.Tensor") -> "torch.Tensor":
    h, s, v = hsv.unbind(1)
    h6 = h * 6.0
    i = torch.floor(h6)
    f = h6 - i
    i = i.long().remainder_(6)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    cands = torch.stack([v, q, p, t], 1)  # (B, 4, H, W)
    table = torch.tensor(_SEXTANT, device=hsv.device)  # (3, 6)
    idx = table[:, i].permute(1, 0, 2, 3)  # (B, 3, H, W)
    return torch.gather(cands, 1, idx)


def adjust_hue(x: "torch.Tensor", shift: "torch.Tensor") -> "torch.Tensor":
    """Rotate hue by ``shift`` (fraction of a turn, in [-0.5, 0.5]) per image."""
    if x.shape[1] == 1:
        return x
    hsv = rgb_to_hsv(x)
    h = torch.remainder(hsv[:, 0] + shift.view(-1, 1, 1), 1.0)
    return hsv_to_rgb(torch.stack([h, hsv[:, 1], hsv[:, 2]], 1)).clamp_(0.0, 1.0)


_OPS = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)


def color_jitter(x: "torch.Tensor", factors: "list[torch.Tensor | None]", order: list[int]) -> "torch.Tensor":
    """Apply brightness, contrast, saturation, hue (``factors[k]`` per image, None = skip) in ``order``."""
    for k in order:
        if factors[k] is not None:
            x = _OPS[k](x, factors[k])
    return x


def random_color_jitter(
    x: "torch.Tensor", g: "torch.Generator", strengths: tuple[float, float, float, float], p: float
) -> "torch.Tensor":
    """torchvision's ``RandomApply([ColorJitter(b, c, s, h)], p)`` with factors drawn per image.

    Factors: brightness, contrast, saturation uniform in [max(0, 1 − s), 1 + s]; hue uniform
    in [−h, h]. The order of the four operations is drawn once per batch (torchvision draws
    it per image); a zero strength skips its operation as in torchvision.
    """
    n, dev = x.shape[0], x.device
    factors: list = []
    for k, s in enumerate(strengths):
        if s == 0:
            factors.append(None)
            continue
        lo, hi = (-s, s) if k == 3 else (max(0.0, 1 - s), 1 + s)
        factors.append(lo + (hi - lo) * torch.rand(n, device=dev, generator=g))
    order = torch.randperm(4, device=dev, generator=g).tolist()
    applied = torch.rand(n, device=dev, generator=g) < p
    return torch.where(_per_image(applied), color_jitter(x, factors, order), x)


def random_grayscale(x: "torch.Tensor", g: "torch.Generator", p: float) -> "torch.Tensor":
    """torchvision's ``RandomGrayscale(p)``: each image becomes 3-channel luma with probability p."""
    if x.shape[1] == 1:
        return x
    gray = torch.rand(x.shape[0], device=x.device, generator=g) < p
    return torch.where(_per_image(gray), luma(x).expand_as(x), x)
