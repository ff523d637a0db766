"""How the uint8 train set on the device becomes float training batches.

Everything here works on whole epochs or large chunks in a few tensor ops (airbench's
lesson: on small batches, per-op overhead and allocation, not arithmetic, are the cost), so
the trainer has no per-sample Python, no DataLoader and no worker process. Measured side by
side against a loop on pre-built float batches by ``python -m bench.perf trainer``.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from registry.lazy import lazy_import

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_import("torch")

MIRROR_BUDGET = 1 << 31
"""Bytes up to which `EpochAugmenter` keeps a mirrored copy of the padded images."""


def _draw(b: int, pad: int, flip: bool, dev, g: "torch.Generator"):
    dy = torch.randint(0, 2 * pad + 1, (b, 1, 1), device=dev, generator=g)
    dx = torch.randint(0, 2 * pad + 1, (b, 1, 1), device=dev, generator=g)
    mirrored = torch.rand(b, device=dev, generator=g) < 0.5 if flip else None
    return dy, dx, mirrored


def _row_offsets(src: "torch.Tensor", h: int) -> "torch.Tensor":
    """Flat offset of row ``r`` of channel ``ch`` within one padded image, shape (1, c, h)."""
    _, c, hp, wp = src.shape
    ar = lambda k: torch.arange(k, device=src.device)
    return ((ar(c) * hp).view(1, c, 1) + ar(h).view(1, 1, h)) * wp


def _windows(src: "torch.Tensor", img, dy, dx, size: tuple[int, int], rows: "torch.Tensor | None" = None):
    """Crops at per-image offsets ``(dy, dx)`` (each (b, 1, 1)) of ``src[img]``.

    Every output row is ``w`` contiguous elements of ``src``, so the crop is one
    ``index_select`` of row starts over an overlapping window view of the flat storage: one
    index per row instead of one per pixel (about 6x faster than a per-pixel gather on CPU).
    """
    b = img.shape[0]
    h, w = size
    _, c, hp, wp = src.shape
    rows = _row_offsets(src, h) if rows is None else rows
    starts = ((img.view(b, 1, 1) * (c * hp) + dy) * wp + dx) + rows  # (b, c, h)
    windows = src.view(-1).unfold(0, w, 1)
    return windows.index_select(0, starts.view(-1)).view(b, c, h, w)


def crop_flip(
    x_padded: "torch.Tensor", idx: "torch.Tensor", size: tuple[int, int], pad: int, flip: bool, g: "torch.Generator"
) -> "torch.Tensor":
    """Random ``size`` crops of the padded images ``x_padded[idx]`` (offsets uniform in
    ``0..2*pad``), each mirrored with probability 1/2 when ``flip``."""
    dy, dx, mirrored = _draw(idx.shape[0], pad, flip, x_padded.device, g)
    out = _windows(x_padded.contiguous(), idx, dy, dx, size)
    if flip:
        m = mirrored.nonzero().view(-1)
        out[m] = out.index_select(0, m).flip(-1)
    return out


class EpochAugmenter:
    """Crop-with-padding and flip for whole epochs of one training stage.

    Holds the padded images once per stage and, when that fits `MIRROR_BUDGET`, their mirror
    image stacked below them: a mirrored crop at ``(dy, dx)`` is then the crop at
    ``(dy, 2*pad - dx)`` of the mirror, so crop and flip are a single ``index_select`` with no
    scatter afterwards. Its output equals `crop_flip`'s for the same generator state.
    """

    def __init__(self, x: "torch.Tensor", pad: int, flip: bool = True, mirror_budget: int = MIRROR_BUDGET):
        self.size = tuple(x.shape[2:])
        self.pad, self.flip = pad, flip
        self.padded = torch.nn.functional.pad(x, (pad,) * 4) if pad else x.contiguous()
        self.n = len(x)
        fits = 2 * self.padded.numel() * self.padded.element_size() <= mirror_budget
        self.stacked = torch.cat([self.padded, self.padded.flip(-1)]) if flip and fits else None
        self._rows = _row_offsets(self.padded, self.size[0])

    def __call__(self, idx: "torch.Tensor", g: "torch.Generator") -> "torch.Tensor":
        if self.stacked is None:
            return crop_flip(self.padded, idx, self.size, self.pad, self.flip, g)
        dy, dx, mirrored = _draw(idx.shape[0], self.pad, True, idx.device, g)
        m = mirrored.view(-1, 1, 1)
        img = idx.view(-1, 1, 1) + m * self.n
        return _windows(self.stacked, img, dy, torch.where(m, 2 * self.pad - dx, dx), self.size, self._rows)


def to_float(xb: "torch.Tensor", channels_last: bool) -> "torch.Tensor":
    """uint8 batch → float in [0, 1] (the reference code uses no mean/std normalization).

    A cast copy into the target layout, then an in-place scale: the cast is vectorized, while
    ``xb * (1/255)`` takes torch's slower mixed-dtype path."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    out = torch.empty(xb.shape, dtype=torch.float32, device=xb.device, memory_format=fmt)
    return out.copy_(xb).mul_(1.0 / 255.0)


def steps_per_epoch(n: int, bs: int) -> int:
    """Batches per epoch: every full batch, plus the partial last one unless it would hold a
    single image (BatchNorm cannot train on one)."""
    return n // bs + (1 if n % bs >= 2 else 0)


def float_buffer(x: "torch.Tensor", bs: int, channels_last: bool) -> "torch.Tensor":
    """Two batches' worth of float storage, reused by `float_batches` for a whole stage."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return torch.empty((2 * bs, *x.shape[1:]), device=x.device, memory_format=fmt)


def float_batches(x_epoch: "torch.Tensor", bs: int, steps: int, buf: "torch.Tensor") -> Iterator["torch.Tensor"]:
    """The epoch's uint8 images as float batches in [0, 1], each a view into ``buf``.

    Why a kept two-batch buffer: converting into a fresh tensor allocates a multi-MB block
    every step, and on CPU that is fresh pages (measured over 10x slower than converting in place);
    a batch-sized buffer also leaves the batch in cache for the forward pass. A batch is
    converted when asked for, after the step before has run its backward, and the two halves
    alternate so the previous batch stays intact for a defense that still looks at it.
    """
    for k in range(steps):
        src = x_epoch[k * bs : (k + 1) * bs]
        half = buf[(k % 2) * bs : (k % 2) * bs + len(src)]
        yield half.copy_(src).mul_(1.0 / 255.0)  # a vectorized cast, then an in-place scale
