"""Dataset plugins (bench.datasets) on the real shared CIFAR-10 copy and the built-in mini set."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CIFAR10, FULL_COPY_REASON, SHARED_DATA, have_full_copy, needs_full_copy

from bench.data import stratified_indices
from bench.datasets import DATA_ENV, DatasetError, cifar10_mini, resolve_data_root
from registry import DATASETS, RegistryError

REPO = Path(__file__).resolve().parents[1]


def _build_script():
    """The build script of cifar10-mini (scripts/ is not a package: load it by path)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_cifar10_mini", REPO / "scripts" / "make_cifar10_mini.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_SCRIPT = _build_script()
SOURCE_COMMIT, SOURCE_SHA256 = _SCRIPT.SOURCE_COMMIT, _SCRIPT.SOURCE_SHA256
SHARED, CIFAR = SHARED_DATA, CIFAR10
HAVE_SHARED = have_full_copy()
needs_shared = needs_full_copy
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
README_MEAN = (125.3, 122.9, 113.9)  # /work/shared/data/cifar10/README.md, train, rounded


def one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg, f"message is not one line: {msg!r}"
    return msg


@pytest.fixture(scope="module")
def full():
    """The full shared CIFAR-10 through the cifar10 plugin (loaded once per module)."""
    if not HAVE_SHARED:
        pytest.skip(FULL_COPY_REASON)
    t = time.perf_counter()
    splits = DATASETS.create("cifar10").load(SHARED)
    print(f"\nfull cifar10 npz load: {time.perf_counter() - t:.2f} s")
    return splits


@pytest.fixture(scope="module")
def mini():
    t = time.perf_counter()
    splits = DATASETS.create("cifar10-mini").load(None)
    print(f"\ncifar10-mini load: {time.perf_counter() - t:.2f} s")
    return splits


# -- registry -----------------------------------------------------------------------------
def test_registry_lists_all_datasets():
    names = DATASETS.list()
    for name in ("cifar10", "cifar100", "svhn", "npz", "imagefolder", "cifar10-mini"):
        assert name in names
    assert DATASETS.list("cifar*") == ["cifar10", "cifar10-mini", "cifar100"]


def test_listing_does_not_import_torch():
    code = (
        "import sys, registry\n"
        "names = registry.DATASETS.list()\n"
        "print(','.join(names))\n"
        "print('torch._C' in sys.modules, 'torchvision' in sys.modules, 'PIL.Image' in sys.modules)\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    names, imported = out.stdout.strip().splitlines()
    assert set(names.split(",")) >= {"cifar10", "cifar100", "svhn", "npz", "imagefolder", "cifar10-mini"}
    assert imported == "False False False", f"torch/torchvision/PIL imported while listing: {imported}"


def test_params_are_validated():
    with pytest.raises(RegistryError, match="unknown field"):
        DATASETS.create("cifar10", bogus=1)
    with pytest.raises(RegistryError, match="path"):
        DATASETS.create("imagefolder")
    with pytest.raises(RegistryError, match="first_k_classes"):
        DATASETS.create("imagefolder", path="x", first_k_classes=0)


def test_resolve_data_root(monkeypatch, tmp_path):
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "env"))
    assert resolve_data_root(str(tmp_path / "cli")) == tmp_path / "cli"
    assert resolve_data_root(None) == tmp_path / "env"
    monkeypatch.delenv(DATA_ENV)
    assert resolve_data_root(None) == Path("~/.cache/uebench/data").expanduser()
    assert DATA_ENV == "UEBENCH_DATA"


# -- cifar10 from the shared npz copy ---------------------------------------------------------
@needs_shared
def test_cifar10_npz_copy(full):
    assert full.name == "cifar10"
    assert full.info["source"] == str(CIFAR)
    assert tuple(full.train.x.shape) == (50000, 3, 32, 32)
    assert tuple(full.test.x.shape) == (10000, 3, 32, 32)
    assert full.train.x.dtype == torch.uint8 and full.test.x.dtype == torch.uint8
    assert full.train.y.dtype == torch.int64
    assert torch.bincount(full.train.y).tolist() == [5000] * 10
    assert torch.bincount(full.test.y).tolist() == [1000] * 10
    assert full.train.classes == CIFAR10_CLASSES and full.test.classes == CIFAR10_CLASSES
    mean = full.train.x.numpy().sum(axis=(0, 2, 3), dtype=np.int64) / (50000 * 32 * 32)
    assert np.allclose(mean, README_MEAN, atol=0.1), mean


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "svhn"])
def test_missing_data_without_download_raises_one_line(name, tmp_path):
    with pytest.raises(RuntimeError) as exc:
        DATASETS.create(name, download=False).load(tmp_path)
    msg = one_line(exc)
    assert DATA_ENV in msg and str(tmp_path / name) in msg and "train.npz" in msg


def test_half_npz_pair_names_missing_file(tmp_path):
    folder = tmp_path / "cifar10"
    folder.mkdir()
    _write_npz(folder / "train.npz", np.zeros((2, 4, 4, 3), np.uint8), np.array([0, 1]))
    with pytest.raises(DatasetError) as exc:
        DATASETS.create("cifar10", download=False).load(tmp_path)
    assert str(folder / "test.npz") in one_line(exc)


# -- npz ----------------------------------------------------------------------------------------
@needs_shared
def test_npz_plugin_matches_cifar10(full):
    splits = DATASETS.create("npz", path="cifar10", classes=list(CIFAR10_CLASSES)).load(SHARED)
    assert splits.name == "npz" and splits.info["source"] == str(CIFAR)
    assert torch.equal(splits.train.x, full.train.x) and torch.equal(splits.train.y, full.train.y)
    assert torch.equal(splits.test.x, full.test.x) and torch.equal(splits.test.y, full.test.y)
    assert splits.fingerprint() == full.fingerprint()


def _write_npz(path: Path, x, y=None, **extra):
    arrays = {"x": x, **({"y": y} if y is not None else {}), **extra}
    np.savez_compressed(path, **arrays)


def test_npz_plugin_classes_and_paths(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "tiny"
    folder.mkdir()
    x_tr, y_tr = rng.integers(0, 256, (6, 8, 8, 3), dtype=np.uint8), np.array([0, 1, 2, 0, 1, 2])
    x_te, y_te = rng.integers(0, 256, (3, 8, 8, 3), dtype=np.uint8), np.array([2, 1, 0], dtype=np.int32)
    _write_npz(folder / "train.npz", x_tr, y_tr)
    _write_npz(folder / "test.npz", x_te, y_te)
    rel = DATASETS.create("npz", path="tiny").load(tmp_path)
    absolute = DATASETS.create("npz", path=str(folder)).load(tmp_path / "elsewhere")
    assert rel.fingerprint() == absolute.fingerprint()
    assert rel.train.classes == ("0", "1", "2")
    assert torch.equal(rel.train.x, torch.from_numpy(x_tr).permute(0, 3, 1, 2))
    assert rel.test.y.dtype == torch.int64 and rel.test.y.tolist() == [2, 1, 0]
    # a unicode classes array in the files is used; the param overrides it
    _write_npz(folder / "train.npz", x_tr, y_tr, classes=np.array(["a", "b", "c"]))
    assert DATASETS.create("npz", path="tiny").load(tmp_path).train.classes == ("a", "b", "c")
    assert DATASETS.create("npz", path="tiny", classes=["x", "y", "z"]).load(tmp_path).test.classes == ("x", "y", "z")
    with pytest.raises(DatasetError, match="out of range"):
        DATASETS.create("npz", path="tiny", classes=["x", "y"]).load(tmp_path)


GOOD_X = np.zeros((4, 8, 8, 3), np.uint8)
GOOD_Y = np.array([0, 1, 0, 1])


@pytest.mark.parametrize(
    "arrays, match",
    [
        ({"x": GOOD_X.astype(np.float32), "y": GOOD_Y}, "uint8"),
        ({"x": GOOD_X}, "missing array"),
        ({"x": GOOD_X, "y": GOOD_Y[:3]}, "shape"),
        ({"x": GOOD_X, "y": GOOD_Y.astype(np.float64)}, "integer"),
        ({"x": GOOD_X.transpose(0, 3, 1, 2).copy(), "y": GOOD_Y}, "NCHW"),
        ({"x": GOOD_X, "y": GOOD_Y, "classes": np.array(["a", None], dtype=object)}, "pickle"),
    ],
    ids=["float-x", "missing-y", "short-y", "float-y", "nchw", "object-classes"],
)
def test_npz_malformed_raises_one_line_naming_file(tmp_path, arrays, match):
    np.savez_compressed(tmp_path / "train.npz", **arrays)
    _write_npz(tmp_path / "test.npz", GOOD_X, GOOD_Y)
    with pytest.raises(DatasetError, match=match) as exc:
        DATASETS.create("npz", path=str(tmp_path)).load(tmp_path)
    assert str(tmp_path / "train.npz") in one_line(exc)


def test_npz_not_an_archive(tmp_path):
    (tmp_path / "train.npz").write_bytes(b"not a zip file at all")
    _write_npz(tmp_path / "test.npz", GOOD_X, GOOD_Y)
    with pytest.raises(RuntimeError) as exc:
        DATASETS.create("npz", path=".").load(tmp_path)
    assert str(tmp_path / "train.npz") in one_line(exc)


# -- cifar10-mini ---------------------------------------------------------------------------
def test_mini_sizes_and_file(mini):
    assert mini.name == "cifar10-mini" and mini.info["source"] == "builtin"
    assert tuple(mini.train.x.shape) == (2000, 3, 32, 32) and mini.train.x.dtype == torch.uint8
    assert tuple(mini.test.x.shape) == (500, 3, 32, 32)
    assert torch.bincount(mini.train.y, minlength=10).tolist() == [200] * 10
    assert torch.bincount(mini.test.y, minlength=10).tolist() == [50] * 10
    assert mini.train.classes == CIFAR10_CLASSES
    with cifar10_mini.mini_path() as p:
        assert p.stat().st_size <= 8_000_000
        assert p.with_suffix(".md").is_file()


def test_mini_is_deterministic(mini):
    again = DATASETS.create("cifar10-mini").load(Path("/nonexistent"))  # root is ignored
    assert again.fingerprint() == mini.fingerprint() == cifar10_mini.FINGERPRINT


@needs_shared
def test_mini_is_a_real_subset(mini, full):
    prov = cifar10_mini.read_provenance()
    assert prov["source_commit"] == SOURCE_COMMIT and prov["seed"] == 0
    assert prov["source_train_sha256"] == SOURCE_SHA256["train.npz"]
    assert prov["source_test_sha256"] == SOURCE_SHA256["test.npz"]
    for part, n in (("train", 2000), ("test", 500)):
        idx = torch.from_numpy(prov[f"{part}_index"])
        src, sub = getattr(full, part), getattr(mini, part)
        assert len(torch.unique(idx)) == n
        # byte-identical images, same labels, and exactly the documented selection rule
        assert torch.equal(sub.x, src.x[idx]), f"{part}: mini images differ from the shared copy"
        assert torch.equal(sub.y, src.y[idx])
        assert torch.equal(idx, stratified_indices(src.y, n, seed=0))


# -- stratified_indices -----------------------------------------------------------------------
def test_stratified_indices():
    y = torch.arange(1000) % 10
    y = y[torch.randperm(1000, generator=torch.Generator().manual_seed(123))]
    a, b, c = stratified_indices(y, 205, 0), stratified_indices(y, 205, 0), stratified_indices(y, 205, 1)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert len(a) == 205 and len(torch.unique(a)) == 205 and torch.equal(a, torch.sort(a).values)
    assert torch.bincount(y[a], minlength=10).tolist() == [21] * 5 + [20] * 5
    assert torch.bincount(y[c], minlength=10).tolist() == [21] * 5 + [20] * 5
    assert torch.equal(stratified_indices(y, 5000, 0), torch.arange(1000))


# -- imagefolder ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def folder(tmp_path_factory, mini):
    """<tmp>/ds/{train,val}/<class>/NNNN.png from 4 classes of the real CIFAR images (mini set)."""
    from PIL import Image

    base = tmp_path_factory.mktemp("imagefolder") / "ds"
    counts = {"train": 5, "val": 3}
    truth = {}
    for split, data in (("train", mini.train), ("val", mini.test)):
        xs = []
        for label in range(4):
            cls = CIFAR10_CLASSES[label]
            (base / split / cls).mkdir(parents=True)
            members = torch.nonzero(data.y == label).flatten()[: counts[split]]
            for j, i in enumerate(members.tolist()):
                img = data.x[i].permute(1, 2, 0).numpy()
                Image.fromarray(img).save(base / split / cls / f"{j:04d}.png")
                xs.append(data.x[i])
        truth[split] = torch.stack(xs)
    (base / "train" / ".hidden").mkdir()
    (base / "train" / "airplane" / "notes.txt").write_text("not an image")
    return base, truth


def test_imagefolder_roundtrip(folder):
    base, truth = folder
    splits = DATASETS.create("imagefolder", path="ds").load(base.parent)
    assert splits.name == "imagefolder" and splits.info["source"] == str(base)
    assert splits.train.classes == CIFAR10_CLASSES[:4]
    assert torch.equal(splits.train.x, truth["train"])  # size=32: pixels round-trip exactly
    assert torch.equal(splits.test.x, truth["val"])
    assert splits.train.y.tolist() == sum([[k] * 5 for k in range(4)], [])
    assert splits.test.y.tolist() == sum([[k] * 3 for k in range(4)], [])


def test_imagefolder_first_k_caps_and_size(folder):
    base, truth = folder
    p = dict(path=str(base), first_k_classes=3, per_class=2, test_per_class=1)
    s0 = DATASETS.create("imagefolder", **p).load(base.parent)
    assert s0.train.classes == CIFAR10_CLASSES[:3]
    assert torch.bincount(s0.train.y).tolist() == [2, 2, 2]
    assert torch.bincount(s0.test.y).tolist() == [1, 1, 1]
    # every kept image is one of the class's source images
    for img, label in zip(s0.train.x, s0.train.y.tolist()):
        pool = truth["train"][label * 5 : label * 5 + 5]
        assert any(torch.equal(img, t) for t in pool)
    assert DATASETS.create("imagefolder", **p).load(base.parent).fingerprint() == s0.fingerprint()
    others = [DATASETS.create("imagefolder", **p, seed=s).load(base.parent).fingerprint() for s in (1, 2, 3)]
    assert any(fp != s0.fingerprint() for fp in others)

    small = DATASETS.create("imagefolder", path=str(base), size=16, first_k_classes=2).load(base.parent)
    assert tuple(small.train.x.shape) == (10, 3, 16, 16) and small.train.x.dtype == torch.uint8

    with pytest.raises(DatasetError, match="first_k_classes=9") as exc:
        DATASETS.create("imagefolder", path=str(base), first_k_classes=9).load(base.parent)
    one_line(exc)


def test_imagefolder_non_square_and_errors(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for cls, (w, h) in (("a", (64, 48)), ("b", (30, 90))):
            (tmp_path / "d" / split / cls).mkdir(parents=True)
            arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            Image.fromarray(arr).save(tmp_path / "d" / split / cls / "img.jpg", quality=90)
    Image.fromarray(rng.integers(0, 256, (20, 20), dtype=np.uint8), mode="L").save(tmp_path / "d" / "train" / "b" / "gray.png")
    s = DATASETS.create("imagefolder", path="d", size=24).load(tmp_path)
    assert tuple(s.train.x.shape) == (3, 3, 24, 24) and s.train.classes == ("a", "b")

    (tmp_path / "d" / "val" / "b" / "img.jpg").unlink()
    with pytest.raises(DatasetError, match="no images") as exc:
        DATASETS.create("imagefolder", path="d").load(tmp_path)
    assert str(tmp_path / "d" / "val" / "b") in one_line(exc)
    (tmp_path / "d" / "train" / "a" / "broken.png").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="cannot read image") as exc:
        DATASETS.create("imagefolder", path="d", test_dir="train").load(tmp_path)
    assert "broken.png" in one_line(exc)
    with pytest.raises(DatasetError, match="folder not found"):
        DATASETS.create("imagefolder", path="missing").load(tmp_path)
