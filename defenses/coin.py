"""``coin``: COIN, random per-pixel displacement with bilinear resampling (Li et al., AAAI 2025; ``docs/algorithms/erasers.md``).

COIN ("COrrupting convolution-based unlearnable examples via random matrix multiplication
by bilinear INterpolation") is the defense the convolution-based attacks (CUDA and its
variants) are paired with. For each training image after crop and flip it draws a
displacement field, independently per pixel and per axis, dx, dy ~ U(−α, α) (the same field
for every channel), and resamples the image at (row + dy, col + dx) by bilinear interpolation.
Out-of-image coordinates wrap around as the reference's ``scipy.ndimage.map_coordinates(...,
order=1, mode="wrap")`` does: a coordinate c outside [0, n − 1] is taken modulo n − 1 (the
first and last pixel overlap), then interpolated inside the image. The result is clipped to
[0, 1] and truncated to a uint8 level as the reference's ``np.uint8`` cast (``quantize``).

Defaults follow the reference code (``wxldragon/COIN`` ``train.py`` ``COIN_trans``, the same
function in ``wxldragon/DUNE``): severity 4, α = 2.0, train images only (the test images go
through ``ToTensor`` alone). Randomness comes from the trainer's generator ``g``: the same
seed gives the same displacement fields. Cost: one ``grid_sample`` per batch.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from bench.api import DEFENSES, Defense, lazy_import

torch = lazy_import("torch")

SEVERITY_ALPHA = {1: 0.8, 2: 1.2, 3: 1.6, 4: 2.0, 5: 2.4, 6: 2.8, 7: 3.2}
"""The reference's ``--severity`` → α table (``COIN_trans``); severity 4 is the default."""


class COINParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    alpha: float = Field(2.0, gt=0, le=16, description="max displacement per axis in pixels, dx, dy ~ U(-α, α) (reference: severity 4 = 2.0)")
    boundary: Literal["wrap", "border", "reflection", "zeros"] = Field(
        "wrap", description="outside the image: wrap (reference, scipy map_coordinates mode='wrap') | border | reflection | zeros (grid_sample's modes)"
    )
    quantize: Literal["floor", "round", "none"] = Field(
        "floor", description="back to uint8 levels: floor (reference's np.uint8 cast) | round | none (keep floats)"
    )


FLOOR_TOLERANCE = 1e-3
"""Added before the floor, in levels: a value that is k/255 up to float32 error stays level k."""


def displacement(shape: tuple[int, int, int], alpha: float, g, device) -> "torch.Tensor":
    """(B, 2, H, W) offsets in pixels, U(−α, α) per pixel and axis: [:, 0] = dy (rows), [:, 1] = dx (columns)."""
    b, h, w = shape
    return (torch.rand((b, 2, h, w), generator=g, device=device) * 2.0 - 1.0) * alpha


def _wrap(c: "torch.Tensor", n: int) -> "torch.Tensor":
    """scipy's ``mode="wrap"`` on a coordinate: inside [0, n − 1] as is, outside modulo n − 1."""
    if n < 2:
        return torch.zeros_like(c)
    outside = (c < 0) | (c > n - 1)
    return torch.where(outside, torch.remainder(c, n - 1), c)


def resample(x: "torch.Tensor", offsets: "torch.Tensor", boundary: str = "wrap") -> "torch.Tensor":
    """Bilinear samples of ``x`` (B, C, H, W) at (row + dy, col + dx) for ``offsets`` (B, 2, H, W)."""
    import torch.nn.functional as F

    b, _, h, w = x.shape
    rows = torch.arange(h, device=x.device, dtype=x.dtype).view(1, h, 1)
    cols = torch.arange(w, device=x.device, dtype=x.dtype).view(1, 1, w)
    sy, sx = rows + offsets[:, 0].to(x.dtype), cols + offsets[:, 1].to(x.dtype)
    mode = boundary
    if boundary == "wrap":  # every coordinate is mapped inside the image first
        sy, sx, mode = _wrap(sy, h), _wrap(sx, w), "border"
    # grid_sample with align_corners=True: −1 and 1 are the centres of the edge pixels
    grid = torch.stack((2.0 * sx / max(w - 1, 1) - 1.0, 2.0 * sy / max(h - 1, 1) - 1.0), dim=-1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=mode, align_corners=True)


@DEFENSES.register(
    "coin",
    params=COINParams,
    description="COIN: per-pixel random displacement U(-2, 2) px, bilinear resampling (wrap), train batches only",
    reference="Li, Wang et al. AAAI 2025 (COIN), arXiv 2311.18403; wxldragon/COIN train.py COIN_trans; DUNE train.py --defense coin",
    category="augmentation",
    cost="one grid_sample per batch",
)
class COIN(Defense):
    def batch_transform(self, x, y, g):
        p = self.params
        n, _, h, w = x.shape
        out = resample(x, displacement((n, h, w), p.alpha, g, x.device), p.boundary).clamp_(0.0, 1.0)
        if p.quantize == "floor":  # the tolerance absorbs float32 interpolation error on flat regions
            out = out.mul_(255.0).add_(FLOOR_TOLERANCE).floor_().div_(255.0)
        elif p.quantize == "round":
            out = out.mul_(255.0).round_().div_(255.0)
        return out, y

    def report(self) -> dict:
        p = self.params
        return {"coin": {"alpha": p.alpha, "boundary": p.boundary, "quantize": p.quantize}}
