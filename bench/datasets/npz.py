"""``npz``: any dataset stored as ``<path>/train.npz`` + ``<path>/test.npz``.

Each archive holds ``x`` (uint8 images (N, H, W, C), C in {1, 3}, or (N, H, W)), ``y`` (integer
labels (N,)) and optionally ``classes`` (unicode (K,)); it is read with ``allow_pickle=False``
(write it with ``numpy.savez_compressed``; strings must be unicode arrays, not objects).

Params: ``path`` is the folder (a relative path is resolved against the data root);
``classes`` overrides the class names; otherwise the files' ``classes`` array is used, else
"0".."K-1" with K = 1 + the largest label.
"""
from __future__ import annotations

import pathlib
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from bench.data import Dataset
from bench.datasets.common import load_npz_splits
from registry import DATASETS

if TYPE_CHECKING:
    from bench.data import Splits


class NpzParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str = Field(min_length=1)
    """Folder holding train.npz and test.npz; relative paths are resolved against the data root."""
    classes: list[str] | None = None
    """Class names in label order (default: the files' ``classes`` array, else "0".."K-1")."""


def resolve_under(root: pathlib.Path, path: str) -> pathlib.Path:
    """``path`` with ``~`` expanded; relative paths are taken relative to ``root``."""
    p = pathlib.Path(path).expanduser()
    return p if p.is_absolute() else pathlib.Path(root).expanduser() / p


@DATASETS.register(
    "npz",
    params=NpzParams,
    description="train.npz/test.npz in a folder (x uint8 NHWC, y int, optional classes); path relative to root",
)
class NpzDataset(Dataset):
    def load(self, root: pathlib.Path) -> "Splits":
        folder = resolve_under(root, self.params.path)
        return load_npz_splits("npz", folder, self.params.classes, info={"root": str(root)})
