"""CIFAR-10, CIFAR-100 and SVHN: a local npz copy if present, else a download.

For dataset ``<name>`` (``cifar10``, ``cifar100``, ``svhn``) and data root ``<root>``:

1. if ``<root>/<name>/train.npz`` and ``<root>/<name>/test.npz`` exist, they are loaded (format:
   ``x`` uint8 (N, H, W, C), ``y`` int labels; see `bench.datasets.common`) with the canonical
   class names below (a ``classes`` array in the files is ignored);
2. otherwise, with ``download`` (the default), CIFAR-10/100 are downloaded from the authors'
   *binary* archives, MD5-checked and stored as that npz pair (`bench.datasets.cifar_binary`:
   nothing is unpickled); SVHN uses torchvision's class (its ``.mat`` files are read by
   scipy, not pickle) with ``root=<root>/<name>``.

If neither works (e.g. no network), a one-line `DatasetError` (a RuntimeError) says where it
looked and how to fix it. Class names: CIFAR from torchvision's ``.classes``; SVHN "0".."9"
(torchvision maps the digit-0 label 10 to 0).
"""
from __future__ import annotations

import pathlib
from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel, ConfigDict

from bench.data import Dataset
from bench.datasets.cifar_binary import ARCHIVES, download_as_npz
from bench.datasets.common import (
    DATA_ENV,
    DatasetError,
    first_line,
    image_data,
    load_npz_splits,
    npz_pair,
)
from registry import DATASETS

if TYPE_CHECKING:
    from bench.data import Splits

CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip

CIFAR100_CLASSES: tuple[str, ...] = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle",
    "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle",
    "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur",
    "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard",
    "lamp", "lawn_mower", "leopard", "lion", "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain",
    "mouse", "mushroom", "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree",
    "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road", "rocket",
    "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider",
    "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone", "television", "tiger", "tractor",
    "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm",
)  # fmt: skip

SVHN_CLASSES: tuple[str, ...] = tuple(str(i) for i in range(10))


class TorchvisionParams(BaseModel):
    """Params of cifar10 / cifar100 / svhn."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    download: bool = True
    """Let torchvision download the data into ``<root>/<name>/`` when no npz copy is there."""


class _TorchvisionSet(Dataset):
    """Shared loader; subclasses set ``name``, ``classes`` and ``_torchvision_split``."""

    name: str = ""
    classes: tuple[str, ...] = ()

    def load(self, root: pathlib.Path) -> "Splits":
        folder = pathlib.Path(root).expanduser() / self.name
        if npz_pair(folder) is not None:
            return load_npz_splits(self.name, folder, self.classes, info={"root": str(root)})
        if self.name in ARCHIVES:
            if not self.params.download:
                raise DatasetError(
                    f"dataset {self.name!r}: no {folder}/train.npz+test.npz (download=False); fix: put them there, "
                    f"or set {DATA_ENV} / --data-root to a folder holding {self.name}/, or allow the download"
                )
            try:
                download_as_npz(self.name, folder, self.classes)
            except (OSError, ValueError) as exc:
                raise DatasetError(
                    f"dataset {self.name!r}: no {folder}/train.npz+test.npz and the download failed ({first_line(exc, 120)}); "
                    f"fix: put train.npz/test.npz under {folder}/, or set {DATA_ENV} / --data-root to a folder holding "
                    f"{self.name}/, or run where the network is reachable"
                ) from None
            return load_npz_splits(self.name, folder, self.classes, info={"root": str(root), "source": "binary archive"})
        return self._load_torchvision(pathlib.Path(root).expanduser(), folder)

    def _load_torchvision(self, root: pathlib.Path, folder: pathlib.Path) -> "Splits":
        from bench.data import Splits

        try:
            import torchvision  # noqa: F401  (import errors are reported like download errors)

            train = self._torchvision_split(folder, train=True)
            test = self._torchvision_split(folder, train=False)
        except Exception as exc:
            how = "download failed" if self.params.download else "download=False"
            raise DatasetError(
                f"dataset {self.name!r}: no {folder}/train.npz+test.npz and torchvision could not load "
                f"{folder} ({how}: {first_line(exc, 120)}); fix: put train.npz/test.npz under {folder}/, "
                f"or set {DATA_ENV} / --data-root to a folder holding {self.name}/, or allow download with network"
            ) from None
        return Splits(
            name=self.name,
            train=train,
            test=test,
            info={"source": "torchvision", "root": str(root), "path": str(folder)},
        )

    def _torchvision_split(self, folder: pathlib.Path, train: bool):  # pragma: no cover - abstract
        raise NotImplementedError


@DATASETS.register(
    "cifar10",
    params=TorchvisionParams,
    description="CIFAR-10 (<root>/cifar10/{train,test}.npz, else downloaded from the binary archive)",
    reference="Krizhevsky 2009",
)
class Cifar10(_TorchvisionSet):
    name = "cifar10"
    classes = CIFAR10_CLASSES


@DATASETS.register(
    "cifar100",
    params=TorchvisionParams,
    description="CIFAR-100, fine labels (<root>/cifar100/{train,test}.npz, else downloaded from the binary archive)",
    reference="Krizhevsky 2009",
)
class Cifar100(_TorchvisionSet):
    name = "cifar100"
    classes = CIFAR100_CLASSES


@DATASETS.register(
    "svhn",
    params=TorchvisionParams,
    description="SVHN digits, train/test without 'extra' (torchvision; or <root>/svhn/{train,test}.npz if present)",
    reference="Netzer et al. 2011",
)
class Svhn(_TorchvisionSet):
    name = "svhn"
    classes = SVHN_CLASSES

    def _torchvision_split(self, folder, train):
        import torchvision

        ds = torchvision.datasets.SVHN(str(folder), split="train" if train else "test", download=self.params.download)
        x = np.asarray(ds.data, dtype=np.uint8)  # already (N, 3, 32, 32)
        y = np.asarray(ds.labels, dtype=np.int64)
        return image_data(x, y, SVHN_CLASSES, folder, layout="NCHW")
