"""The in-memory dataset: uint8 images plus labels and class names.

Images stay uint8 (N, C, H, W) until the last moment: that is what is published, what a
poison is applied to, and what the trainer keeps on the device (4x smaller than float).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel

from registry import RegistryError
from registry.lazy import lazy_import

if TYPE_CHECKING:
    import torch

    from registry.core import Entry
else:
    torch = lazy_import("torch")


@dataclass
class ImageData:
    """One split: ``x`` uint8 (N, C, H, W), ``y`` int64 (N,), class names in label order."""

    x: "torch.Tensor"
    y: "torch.Tensor"
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.x.dtype != torch.uint8 or self.x.ndim != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {self.x.dtype} {tuple(self.x.shape)}")
        if self.y.ndim != 1 or len(self.y) != len(self.x):
            raise ValueError(f"labels must be (N,) with N={len(self.x)}, got {tuple(self.y.shape)}")
        self.y = self.y.long()
        self.classes = tuple(self.classes)

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def to(self, device: "torch.device | str") -> "ImageData":
        return replace(self, x=self.x.to(device), y=self.y.to(device))

    def subset(self, index: "torch.Tensor") -> "ImageData":
        return replace(self, x=self.x[index], y=self.y[index])

    def with_images(self, x: "torch.Tensor") -> "ImageData":
        return replace(self, x=x)

    def with_labels(self, y: "torch.Tensor") -> "ImageData":
        return replace(self, y=y)

    def copy(self) -> "ImageData":
        """A deep copy: what an attack is handed, so nothing it does in place reaches the
        harness's own (pristine) copy or any other cell."""
        return replace(self, x=self.x.clone(), y=self.y.clone())

    def fingerprint(self) -> str:
        """sha256 over images, labels and class names: identifies the data in cache keys."""
        h = hashlib.sha256()
        h.update(repr((tuple(self.x.shape), self.classes)).encode())
        h.update(self.x.contiguous().cpu().numpy().tobytes())
        h.update(self.y.cpu().numpy().astype("int64").tobytes())
        return h.hexdigest()


@dataclass
class Splits:
    """A dataset as the harness uses it: a train and a test split of the same classes."""

    name: str
    train: ImageData
    test: ImageData
    info: dict = field(default_factory=dict)
    holdout: ImageData | None = None  # clean images withheld from training (``holdout: N``), never the test set

    @property
    def num_classes(self) -> int:
        return self.train.num_classes

    def fingerprint(self) -> str:
        return hashlib.sha256((self.train.fingerprint() + self.test.fingerprint()).encode()).hexdigest()


class Dataset:
    """Base class of dataset plugins: built with validated params, ``load(root)`` returns the
    `Splits` (``root`` is the data root; plugins that ship their data ignore it)."""

    def __init__(self, params: BaseModel):
        self.params = params

    def load(self, root: Path) -> Splits:
        raise NotImplementedError


class _DatasetContract:
    """The rules of `registry.DATASETS`, checked when a plugin registers."""

    def check(self, entry: "Entry") -> None:
        if not (isinstance(entry.factory, type) and issubclass(entry.factory, Dataset)):
            raise RegistryError(f"{entry.label}: must be a subclass of bench.api.Dataset, got {entry.factory!r}")
        if entry.meta:
            raise RegistryError(f"{entry.label}: unknown registration keyword(s) {', '.join(sorted(entry.meta))}")


CONTRACT = _DatasetContract()


def stratified_indices(y: "torch.Tensor", n: int, seed: int) -> "torch.Tensor":
    """A deterministic class-balanced subset of ``n`` indices (sorted).

    Each class gets ``n // K`` items and the first ``n % K`` classes (in label order) one more,
    capped by what the class has; the draw within a class is a seeded permutation, so the same
    (labels, n, seed) always yields the same subset on every machine.
    """
    y = y.cpu()
    classes = torch.unique(y)
    k = len(classes)
    if n >= len(y):
        return torch.arange(len(y))
    g = torch.Generator().manual_seed(seed)
    picks = []
    for i, c in enumerate(classes.tolist()):
        members = torch.nonzero(y == c).flatten()
        want = min(len(members), n // k + (1 if i < n % k else 0))
        picks.append(members[torch.randperm(len(members), generator=g)[:want]])
    return torch.sort(torch.cat(picks)).values
