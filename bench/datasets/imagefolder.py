"""``imagefolder``: ImageNet-style class folders, decoded to uint8 ``size`` x ``size`` RGB.

Layout: ``<path>/<train_dir>/<class>/**/*.jpg`` and ``<path>/<test_dir>/<class>/**/*.jpg``
(defaults ``train`` and ``val``; extensions as torchvision's ImageFolder, case-insensitive;
hidden files/folders are skipped). Relative ``path`` is resolved against the data root.

* Classes: the sorted folder names of ``<train_dir>``; ``first_k_classes=k`` keeps the first k
  (ImageNet-100 in the usual sense = ``first_k_classes=100`` on ImageNet-1k). Every kept class
  must also have a non-empty folder in ``<test_dir>``; extra test folders are ignored.
* Caps: ``per_class`` (train) and ``test_per_class`` (test) keep at most that many files per
  class, chosen by a *seeded hash*: files are ranked by sha256("<seed>/<class>/<relative file>")
  and the first ones are kept (then put back in file-name order). The choice is deterministic,
  independent of the machine, numpy/torch versions, of the other classes and of
  ``first_k_classes``; another ``seed`` gives another subset.
* Pixels: RGB; the shorter side is resized to ``size`` (PIL bilinear with antialiasing, long
  side ``int(size * long / short)`` like torchvision's ``Resize``), then center-cropped to
  ``size`` x ``size`` (offsets rounded like torchvision's ``CenterCrop``). Images that are
  already ``size`` x ``size`` are not resampled (their pixels round-trip exactly). Large JPEGs are
  decoded with Pillow's DCT draft mode at >= 2 x ``size`` before resizing (much faster, visually
  equivalent).

Decoding runs on a thread pool (Pillow releases the GIL while decoding).
"""
from __future__ import annotations

import hashlib
import os
import pathlib
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from bench.data import Dataset
from bench.datasets.common import DatasetError, first_line, image_data
from bench.datasets.npz import resolve_under
from registry import DATASETS

if TYPE_CHECKING:
    from bench.data import ImageData, Splits

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


class ImageFolderParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str = Field(min_length=1)
    """Dataset folder (holding ``train_dir`` and ``test_dir``); relative to the data root."""
    train_dir: str = "train"
    test_dir: str = "val"
    first_k_classes: int | None = Field(default=None, ge=1)
    """Keep only the first k class folders in sorted order."""
    per_class: int | None = Field(default=None, ge=1)
    """At most this many train images per class (seeded-hash choice, see module doc)."""
    test_per_class: int | None = Field(default=None, ge=1)
    """At most this many test images per class (seeded-hash choice, see module doc)."""
    seed: int = 0
    """Seed of the per-class capping choice."""
    size: int = Field(default=32, ge=1, le=4096)
    """Output side: shorter side resized to ``size``, then center crop ``size`` x ``size``."""


def class_folders(split_dir: pathlib.Path) -> list[str]:
    return sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def image_files(class_dir: pathlib.Path) -> list[pathlib.Path]:
    """Image files under ``class_dir`` (recursively), sorted by relative path."""
    out = []
    for dirpath, dirnames, filenames in os.walk(class_dir, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for f in filenames:
            if not f.startswith(".") and f.lower().endswith(IMG_EXTENSIONS):
                out.append(pathlib.Path(dirpath) / f)
    return sorted(out, key=lambda p: p.relative_to(class_dir).as_posix())


def capped(files: list[pathlib.Path], class_dir: pathlib.Path, cap: int | None, seed: int) -> list[pathlib.Path]:
    """At most ``cap`` of ``files``: the lowest sha256("<seed>/<class>/<rel>") ranks, in file order."""
    if cap is None or len(files) <= cap:
        return files
    cls = class_dir.name

    def rank(p: pathlib.Path) -> str:
        return hashlib.sha256(f"{seed}/{cls}/{p.relative_to(class_dir).as_posix()}".encode()).hexdigest()

    keep = set(sorted(files, key=rank)[:cap])
    return [p for p in files if p in keep]


def load_image(path: pathlib.Path, size: int) -> np.ndarray:
    """One image as uint8 (size, size, 3): RGB, shorter side -> size, center crop."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.format == "JPEG" and min(im.size) >= 4 * size:
                im.draft("RGB", (2 * size, 2 * size))
            im = im.convert("RGB")
            w, h = im.size
            if (w, h) != (size, size):
                if w <= h:
                    nw, nh = size, max(size, int(size * h / w))
                else:
                    nw, nh = max(size, int(size * w / h)), size
                if (nw, nh) != (w, h):
                    im = im.resize((nw, nh), Image.Resampling.BILINEAR)
                left, top = int(round((nw - size) / 2.0)), int(round((nh - size) / 2.0))
                im = im.crop((left, top, left + size, top + size))
            arr = np.asarray(im, dtype=np.uint8)
    except Exception as exc:
        raise DatasetError(f"{path}: cannot read image ({first_line(exc)})") from None
    return arr


@DATASETS.register(
    "imagefolder",
    params=ImageFolderParams,
    description="ImageNet-style <path>/{train,val}/<class>/*.jpg, resized+center-cropped to size (default 32)",
    reference="Deng et al. 2009 (ImageNet layout)",
)
class ImageFolder(Dataset):
    def load(self, root: pathlib.Path) -> "Splits":
        from bench.data import Splits

        p = self.params
        base = resolve_under(root, p.path)
        train_dir, test_dir = base / p.train_dir, base / p.test_dir
        for d in (train_dir, test_dir):
            if not d.is_dir():
                raise DatasetError(
                    f"{d}: folder not found; imagefolder expects <path>/{p.train_dir}/<class>/*.jpg and "
                    f"<path>/{p.test_dir}/<class>/*.jpg (path={p.path!r}, root={root})"
                )
        all_classes = class_folders(train_dir)
        if not all_classes:
            raise DatasetError(f"{train_dir}: no class folders")
        classes = all_classes
        if p.first_k_classes is not None:
            if p.first_k_classes > len(all_classes):
                raise DatasetError(
                    f"{train_dir}: first_k_classes={p.first_k_classes} but only {len(all_classes)} class folders"
                )
            classes = all_classes[: p.first_k_classes]
        train = self._split(train_dir, classes, p.per_class)
        test = self._split(test_dir, classes, p.test_per_class)
        return Splits(
            name="imagefolder",
            train=train,
            test=test,
            info={
                "source": str(base),
                "format": "imagefolder",
                "root": str(root),
                "classes_available": len(all_classes),
                "size": p.size,
            },
        )

    def _split(self, split_dir: pathlib.Path, classes: list[str], cap: int | None) -> "ImageData":
        files: list[pathlib.Path] = []
        labels: list[int] = []
        for label, cls in enumerate(classes):
            class_dir = split_dir / cls
            if not class_dir.is_dir():
                raise DatasetError(f"{class_dir}: class folder missing (the train split has class {cls!r})")
            found = image_files(class_dir)
            if not found:
                raise DatasetError(f"{class_dir}: no images ({', '.join(IMG_EXTENSIONS)})")
            chosen = capped(found, class_dir, cap, self.params.seed)
            files += chosen
            labels += [label] * len(chosen)
        size = self.params.size
        workers = max(1, min(16, 2 * (os.cpu_count() or 1)))
        x = np.empty((len(files), size, size, 3), dtype=np.uint8)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for i, arr in enumerate(pool.map(lambda f: load_image(f, size), files)):
                x[i] = arr
        return image_data(x, np.asarray(labels, dtype=np.int64), classes, split_dir)
