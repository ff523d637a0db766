"""Shared helpers of the dataset plugins: the data root, pickle-free npz reading, HWC -> CHW.

The npz format (used by ``<root>/<name>/{train,test}.npz``, the ``npz`` plugin and the
built-in mini set) is one archive per split written with ``numpy.savez_compressed``:

* ``x``: uint8 images (N, H, W, C) with C in {1, 3} (RGB), or (N, H, W) for grayscale;
* ``y``: integer labels (N,), 0 <= y < K;
* ``classes`` (optional): unicode array (K,) of class names in label order.

Archives are opened with ``allow_pickle=False``; every problem raises `DatasetError` with a
one-line message that names the file.
"""
from __future__ import annotations

import os
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from registry.lazy import lazy_import

if TYPE_CHECKING:
    import torch

    from bench.data import ImageData, Splits
else:
    torch = lazy_import("torch")

DATA_ENV = "UEBENCH_DATA"
"""Environment variable naming the data root (used when no explicit root is given)."""

DEFAULT_DATA_ROOT = "~/.cache/uebench/data"
"""Data root used when neither an explicit root nor ``$UEBENCH_DATA`` is set."""

NPZ_FIX_HINT = (
    f"put train.npz/test.npz under <root>/<name>/ or point ${DATA_ENV} / --data-root at the folder holding <name>/"
)


class DatasetError(RuntimeError):
    """A dataset could not be found or read. The message is one line and names the file/folder."""


def resolve_data_root(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The data root: ``explicit`` if given, else ``$UEBENCH_DATA``, else ``~/.cache/uebench/data``.

    ``~`` is expanded; the directory need not exist (downloads create it).
    """
    if explicit is not None and str(explicit) != "":
        return Path(explicit).expanduser()
    env = os.environ.get(DATA_ENV, "")
    if env:
        return Path(env).expanduser()
    return Path(DEFAULT_DATA_ROOT).expanduser()


def first_line(exc: BaseException, limit: int = 200) -> str:
    """A short one-line rendering of an exception (type and first line of its message)."""
    text = str(exc).strip().splitlines()
    msg = text[0] if text else ""
    if len(msg) > limit:
        msg = msg[: limit - 3] + "..."
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


# -- npz reading ----------------------------------------------------------------------------
def read_npz(path: Path, required: Sequence[str], optional: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """The named arrays of a pickle-free ``.npz`` archive (optional ones only if present)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    try:
        archive = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DatasetError(f"{path}: not a readable pickle-free .npz archive ({first_line(exc)})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DatasetError(f"{path}: is a single .npy array, expected an .npz archive with arrays {list(required)}")
    with archive:
        missing = [k for k in required if k not in archive.files]
        if missing:
            raise DatasetError(
                f"{path}: missing array(s) {', '.join(missing)} (has: {', '.join(archive.files) or 'nothing'})"
            )
        out: dict[str, np.ndarray] = {}
        for key in (*required, *optional):
            if key not in archive.files:
                continue
            try:
                out[key] = archive[key]
            except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
                raise DatasetError(f"{path}: array {key!r} unreadable ({first_line(exc)})") from None
    return out


def check_images(x: np.ndarray, path: Path, key: str = "x") -> np.ndarray:
    """Validate uint8 (N, H, W, C) images (C in {1, 3}; (N, H, W) becomes C=1); return NHWC."""
    where = f"{path}: array {key!r}"
    if x.dtype != np.uint8:
        raise DatasetError(f"{where} must be uint8 images (N, H, W, C), got dtype {x.dtype} shape {x.shape}")
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise DatasetError(f"{where} must have shape (N, H, W, C), got {x.shape}")
    if x.shape[-1] not in (1, 3):
        hint = " (looks like NCHW; store NHWC)" if x.shape[1] in (1, 3) else ""
        raise DatasetError(f"{where} must have 1 or 3 channels last (N, H, W, C), got {x.shape}{hint}")
    if x.shape[0] == 0 or x.shape[1] == 0 or x.shape[2] == 0:
        raise DatasetError(f"{where} is empty: shape {x.shape}")
    return x


def check_labels(y: np.ndarray, n: int, path: Path, key: str = "y") -> np.ndarray:
    """Validate integer labels (n,) >= 0; return them as int64."""
    where = f"{path}: array {key!r}"
    if y.dtype == np.bool_ or not np.issubdtype(y.dtype, np.integer):
        raise DatasetError(f"{where} must hold integer labels, got dtype {y.dtype}")
    if y.shape != (n,):
        raise DatasetError(f"{where} must have shape ({n},) to match the images, got {y.shape}")
    if n and int(y.min()) < 0:
        raise DatasetError(f"{where} has a negative label ({int(y.min())})")
    return y.astype(np.int64, copy=False)


def check_classes(classes: np.ndarray, path: Path, key: str = "classes") -> tuple[str, ...]:
    """Validate a unicode (K,) array of class names; return them as a tuple."""
    if classes.dtype.kind != "U" or classes.ndim != 1 or len(classes) == 0:
        raise DatasetError(
            f"{path}: array {key!r} must be a non-empty 1-D unicode array of class names, "
            f"got dtype {classes.dtype} shape {classes.shape}"
        )
    return tuple(str(c) for c in classes.tolist())


def read_split_npz(path: Path) -> tuple[np.ndarray, np.ndarray, tuple[str, ...] | None]:
    """One split file: (x NHWC uint8, y int64, class names or None)."""
    arrays = read_npz(path, ("x", "y"), ("classes",))
    x = check_images(arrays["x"], path)
    y = check_labels(arrays["y"], len(x), path)
    classes = check_classes(arrays["classes"], path) if "classes" in arrays else None
    return x, y, classes


# -- conversion -----------------------------------------------------------------------------
def hwc_to_chw(x: np.ndarray) -> "torch.Tensor":
    """uint8 (N, H, W, C) numpy images -> contiguous uint8 (N, C, H, W) torch tensor."""
    if x.ndim != 4:
        raise ValueError(f"expected (N, H, W, C) images, got shape {x.shape}")
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def image_data(
    x: np.ndarray, y: np.ndarray, classes: Sequence[str], path: Path | str, *, layout: str = "NHWC"
) -> "ImageData":
    """`ImageData` from numpy images (``layout`` NHWC or NCHW) and int labels < len(classes)."""
    from bench.data import ImageData

    if len(y) and int(y.max()) >= len(classes):
        raise DatasetError(f"{path}: label {int(y.max())} out of range for {len(classes)} classes")
    xt = hwc_to_chw(x) if layout == "NHWC" else torch.from_numpy(np.ascontiguousarray(x))
    return ImageData(xt, torch.from_numpy(np.asarray(y, dtype=np.int64)), tuple(classes))


def npz_pair(folder: Path) -> tuple[Path, Path] | None:
    """``(train.npz, test.npz)`` in ``folder`` if both exist, None if neither; one alone raises."""
    train, test = folder / "train.npz", folder / "test.npz"
    have_train, have_test = train.is_file(), test.is_file()
    if have_train and have_test:
        return train, test
    if have_train or have_test:
        missing = test if have_train else train
        raise DatasetError(f"{missing}: file not found (its sibling {'train' if have_train else 'test'}.npz exists)")
    return None


def load_npz_splits(
    name: str, folder: Path, classes: Sequence[str] | None = None, *, info: dict | None = None
) -> "Splits":
    """A `Splits` from ``folder/{train,test}.npz``.

    Class names: ``classes`` if given, else the ``classes`` array of the files (train and test
    must agree), else "0".."K-1" with K = 1 + the largest label of either split.
    """
    from bench.data import Splits

    folder = Path(folder)
    pair = npz_pair(folder)
    if pair is None:
        raise DatasetError(f"{folder}: no train.npz/test.npz here; {NPZ_FIX_HINT}")
    train_path, test_path = pair
    x_tr, y_tr, c_tr = read_split_npz(train_path)
    x_te, y_te, c_te = read_split_npz(test_path)
    if x_tr.shape[1:] != x_te.shape[1:]:
        raise DatasetError(
            f"{test_path}: image shape {x_te.shape[1:]} differs from train.npz's {x_tr.shape[1:]} (H, W, C)"
        )
    if classes is None:
        if c_tr is not None and c_te is not None and c_tr != c_te:
            raise DatasetError(f"{test_path}: 'classes' differ from those of train.npz")
        classes = c_tr if c_tr is not None else c_te
    if classes is None:
        k = 1 + max(int(y_tr.max()), int(y_te.max()) if len(y_te) else 0)
        classes = tuple(str(i) for i in range(k))
    classes = tuple(classes)
    meta = {"source": str(folder), "format": "npz", "train_file": str(train_path), "test_file": str(test_path)}
    meta.update(info or {})
    return Splits(
        name=name,
        train=image_data(x_tr, y_tr, classes, train_path),
        test=image_data(x_te, y_te, classes, test_path),
        info=meta,
    )
