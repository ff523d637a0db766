"""Grayscale, two ways: the float version a model differentiates through, and PIL's exact
uint8 version a defense publishes.

- `luma` / `gray3` (float, [0, 1]): torchvision's tensor ``Grayscale`` weights (0.2989, 0.587,
  0.114). ULEO-Gray optimizes its noise through this (Going Grayscale's generation code
  uses torchvision on tensors); ST's CG augmentation and colour jitter use it too.
- `gray3_uint8`: PIL's ``Grayscale(num_output_channels=3)`` on uint8 RGB, bit-exact (ITU-R
  601-2 luma in fixed point, ``(19595 R + 38470 G + 7471 B + 2^15) >> 16``), as the grayscale
  exploiter of Going Grayscale and ISS applies it to the published images.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from registry.lazy import lazy_import

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_import("torch")

#: ITU-R 601 luma weights, as torchvision's tensor ``Grayscale`` (``rgb_to_grayscale``).
LUMA = (0.2989, 0.587, 0.114)


def luma(x: "torch.Tensor") -> "torch.Tensor":
    """(N, 1, H, W) luminance of float (N, 3, H, W) images; single-channel images are their own."""
    if x.shape[1] == 1:
        return x
    return x[:, 0:1] * LUMA[0] + x[:, 1:2] * LUMA[1] + x[:, 2:3] * LUMA[2]


def gray3(x: "torch.Tensor") -> "torch.Tensor":
    """Gray3 of float images: the luminance replicated to three channels (a view, no copy)."""
    return luma(x).expand_as(x)


def gray3_uint8(x: "torch.Tensor") -> "torch.Tensor":
    """PIL's ``Grayscale(3)`` on uint8 (N, 3, H, W) images, bit-exact and batched; single-channel
    input is returned unchanged."""
    if x.shape[1] == 1:
        return x
    w = torch.tensor([19595, 38470, 7471], dtype=torch.int32, device=x.device).view(1, 3, 1, 1)
    lum = ((x.to(torch.int32) * w).sum(1, keepdim=True) + 32768) >> 16
    return lum.to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
