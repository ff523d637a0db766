"""Built-in dataset plugins of uebench (registered into `registry.DATASETS`).

The modules in `PLUGINS` are imported by the registry on first use, so they must stay cheap
to import: no torch/torchvision/PIL at module top (use `registry.lazy.lazy_import`).
`common` holds the shared readers and checks; it registers nothing.

A dataset plugin subclasses `bench.data.Dataset`: it is built with its validated params and
returns a `bench.data.Splits` from ``load(root)``, where ``root`` is the data root directory
(see `resolve_data_root`).

==============  ==================  ===========================================================
name            module              data
==============  ==================  ===========================================================
cifar10         torchvision_sets    ``<root>/cifar10/{train,test}.npz`` if present, else torchvision
cifar100        torchvision_sets    ``<root>/cifar100/{train,test}.npz`` if present, else torchvision
svhn            torchvision_sets    ``<root>/svhn/{train,test}.npz`` if present, else torchvision
npz             npz                 any folder holding ``train.npz``/``test.npz``
imagefolder     imagefolder         ImageNet-style ``<path>/train/<class>/*.jpg`` + ``val/``
cifar10-mini    cifar10_mini        2,000/500 image subset of real CIFAR-10 shipped in the package
==============  ==================  ===========================================================
"""
from bench.datasets.common import DATA_ENV, DEFAULT_DATA_ROOT, DatasetError, resolve_data_root

PLUGINS = ("cifar10_mini", "npz", "torchvision_sets", "imagefolder")
"""The modules that register datasets (the registry imports these, and only these)."""

__all__ = ["DATA_ENV", "DEFAULT_DATA_ROOT", "DatasetError", "PLUGINS", "resolve_data_root"]
