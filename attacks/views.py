"""What a source model sees while a poison is optimized: clean batches, augmented or not, in
fixed or reshuffled order.

The clean images stay uint8 on the device; a batch is made by one index-select (plus, with
augmentation, the trainer's batched `crop_flip`), so no per-sample Python runs. The
perturbation is *not* augmented: δᵢ stays in the image's fixed coordinates and is added to a
freshly drawn Aug(xᵢ) each time, as the reference code does.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from registry.lazy import lazy_import

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_import("torch")


class CleanView:
    """Float [0, 1] batches of the clean images, with a fresh crop(pad)+flip per draw if asked.

    ``augment`` draws Aug(x) anew on every call, so the model steps, each PGD pass and the
    stop test all see different crops, as a DataLoader with the train transform would give.
    """

    def __init__(self, x: "torch.Tensor", augment: bool, padding: int, g: "torch.Generator", channels_last: bool):
        self.x = x
        self.augment = augment
        self.padding = padding
        self.g = g
        self.channels_last = channels_last
        self.size = tuple(x.shape[2:])
        self._padded = torch.nn.functional.pad(x, (padding,) * 4) if augment and padding else x

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def batch(self, idx: "torch.Tensor") -> "torch.Tensor":
        from bench.batches import crop_flip, to_float

        if self.augment:
            xb = crop_flip(self._padded, idx, self.size, self.padding, True, self.g)
        else:
            xb = self.x[idx]
        return to_float(xb, self.channels_last)


def fixed_batches(n: int, batch_size: int, device: "torch.device") -> list["torch.Tensor"]:
    """Index batches over 0..n-1 in order (``shuffle=False, drop_last=False``); a last batch
    of a single image is merged into the one before (BatchNorm cannot train on one image)."""
    idx = torch.arange(n, device=device)
    out = list(idx.split(batch_size))
    if len(out) > 1 and len(out[-1]) < 2:
        out[-2] = torch.cat([out[-2], out.pop()])
    return out


class BatchStream:
    """An endless stream of index batches that resumes where it stopped and wraps at the end,
    like the reference code's ``next(iterator)`` over a DataLoader: the same order on every pass
    (sample-wise EM) or reshuffled on every pass (class-wise EM).

    The fixed order is one seeded permutation, not index order. The reference code iterates
    CIFAR-10 in its stored order, which is class-mixed; stored class by class (as folder-built
    copies are), index order would give single-class batches and the source model's BatchNorm
    steps would never learn (measured: chance-level source accuracy for 30 rounds on 2,000
    images). δ is indexed by sample either way."""

    def __init__(self, n: int, batch_size: int, shuffle: bool, g: "torch.Generator", device: "torch.device"):
        self.n, self.batch_size, self.shuffle, self.g, self.device = n, batch_size, shuffle, g, device
        self._order = None if shuffle else torch.randperm(n, device=device, generator=g)
        self._queue: list["torch.Tensor"] = []

    def batches_per_pass(self) -> int:
        return len(fixed_batches(self.n, self.batch_size, self.device))

    def __next__(self) -> "torch.Tensor":
        if not self._queue:
            order = torch.randperm(self.n, device=self.device, generator=self.g) if self.shuffle else self._order
            self._queue = [order[b] for b in fixed_batches(self.n, self.batch_size, self.device)]
        return self._queue.pop(0)
