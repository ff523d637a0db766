"""CIFAR-10 / CIFAR-100 from the authors' *binary* archives: downloaded, MD5-checked, parsed
with numpy and stored as ``<root>/<name>/{train,test}.npz``, without unpickling anything.

torchvision's CIFAR classes read the authors' "python version", whose batches are pickles;
the binary version holds the same images as fixed-length records (CIFAR-10: 1 label byte +
3,072 pixel bytes, channel-planar RGB; CIFAR-100: coarse and fine label bytes + 3,072), so
it can be read as plain bytes. Only the expected members of the archive are read (nothing is
extracted to disk), and the npz files are written atomically, so a killed download leaves no
half dataset; the folder is created only when a download is allowed.
"""
from __future__ import annotations

import hashlib
import io
import pathlib
import tarfile
import urllib.request
from dataclasses import dataclass

import numpy as np

from bench.atomic import atomic_write_bytes
from bench.datasets.common import DatasetError, first_line


@dataclass(frozen=True)
class BinaryArchive:
    url: str
    md5: str
    train: tuple[str, ...]
    test: tuple[str, ...]
    label_bytes: int  # bytes before the pixels of each record
    label_index: int  # which of them is the label used


ARCHIVES = {
    "cifar10": BinaryArchive(
        "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz", "c32a1d4ab5d03f1284b67883e8d87530",
        tuple(f"cifar-10-batches-bin/data_batch_{i}.bin" for i in range(1, 6)), ("cifar-10-batches-bin/test_batch.bin",), 1, 0,
    ),
    "cifar100": BinaryArchive(
        "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz", "03b5dce01913d631647c71ecec9e9cb8",
        ("cifar-100-binary/train.bin",), ("cifar-100-binary/test.bin",), 2, 1,
    ),
}
PIXELS = 3 * 32 * 32


def parse_records(raw: bytes, label_bytes: int, label_index: int, where: str) -> tuple[np.ndarray, np.ndarray]:
    """(x uint8 NHWC, y int64) from the concatenated fixed-length records of a binary file."""
    size = label_bytes + PIXELS
    if len(raw) % size:
        raise DatasetError(f"{where}: {len(raw)} bytes is not a whole number of {size}-byte records")
    rec = np.frombuffer(raw, dtype=np.uint8).reshape(-1, size)
    y = rec[:, label_index].astype(np.int64)
    x = rec[:, label_bytes:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(x), y


def read_archive(path: pathlib.Path, spec: BinaryArchive) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The train and test splits of a binary archive (only its expected members are read)."""
    out = {}
    try:
        with tarfile.open(path, "r:gz") as tf:
            for split, members in (("train", spec.train), ("test", spec.test)):
                parts = []
                for name in members:
                    member = tf.getmember(name)
                    if not member.isfile():
                        raise DatasetError(f"{path}: {name} is not a regular file")
                    parts.append(parse_records(tf.extractfile(member).read(), spec.label_bytes, spec.label_index, f"{path}:{name}"))
                out[split] = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    except (tarfile.TarError, KeyError, OSError, EOFError) as exc:
        raise DatasetError(f"{path}: not the expected CIFAR binary archive ({first_line(exc)})") from None
    return out


def _md5(path: pathlib.Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch_archive(spec: BinaryArchive, folder: pathlib.Path) -> pathlib.Path:
    """The archive in ``folder`` (downloaded once, MD5-checked; a bad download is removed)."""
    path = folder / spec.url.rsplit("/", 1)[-1]
    if not path.is_file():
        with urllib.request.urlopen(spec.url, timeout=60) as resp:
            atomic_write_bytes(path, resp.read())
    if _md5(path) != spec.md5:
        path.unlink(missing_ok=True)
        raise DatasetError(f"{path}: MD5 differs from the published {spec.md5} (a damaged download; removed, retry)")
    return path


def download_as_npz(name: str, folder: pathlib.Path, classes: tuple[str, ...]) -> None:
    """Download ``name``'s binary archive into ``folder`` and store it as train.npz/test.npz.

    The folder is removed again if this fails and it was created here."""
    spec = ARCHIVES[name]
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    try:
        splits = read_archive(fetch_archive(spec, folder), spec)
        for split, (x, y) in splits.items():
            buf = io.BytesIO()
            np.savez(buf, x=x, y=y, classes=np.array(classes))
            atomic_write_bytes(folder / f"{split}.npz", buf.getvalue())
    except BaseException:
        if created and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
        raise
