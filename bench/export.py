"""Export a published poison (the uint8 training set an exploiter gets) as an ``.npz`` or a
folder of ``<idx>.png``, the formats `attacks.external` reads back, so poisons travel both
ways between uebench and other codebases."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from bench.atomic import atomic_write_bytes


def content_hash(files: list[Path], base: Path) -> str:
    """sha256 of a folder's files: their names relative to ``base`` and their bytes, in order."""
    import hashlib

    h = hashlib.sha256()
    for f in files:
        h.update(str(f.relative_to(base)).encode() + b"\0")
        h.update(f.read_bytes())
    return h.hexdigest()


def write_npz(x: np.ndarray, y: np.ndarray, classes: tuple[str, ...], path: Path) -> str:
    import hashlib

    buf = io.BytesIO()
    np.savez(buf, x=x, y=y, classes=np.array(classes))
    atomic_write_bytes(path, buf.getvalue())
    return hashlib.sha256(buf.getvalue()).hexdigest()


def write_pngs(x: np.ndarray, folder: Path) -> str:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i, img in enumerate(x):
        buf = io.BytesIO()
        Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).save(buf, format="PNG")
        atomic_write_bytes(folder / f"{i}.png", buf.getvalue())
        files.append(folder / f"{i}.png")
    return content_hash(files, folder)


def export_poison(target, params, dataset, n_train, seed, fmt, out, data_root=None, cache_dir=None, device=None, attack=None):
    """(path, content sha256, images) of the exported poison of ``target`` (see `bench.show`)."""
    from bench.cache import Cache, resolve_cache_dir
    from bench.datasets.common import resolve_data_root
    from bench.device import prepare_device
    from bench.poison import load_dataset, make_poison
    from bench.show import matrix_for, pick_task

    m = matrix_for(target, params or {}, dataset, n_train, seed)
    task = pick_task(m, attack, seed if attack is None and not Path(target).is_file() else None)
    root = resolve_data_root(str(data_root) if data_root else m.data_root)
    clean = load_dataset(task.dataset, root)
    record = make_poison(task, m.apply, clean, Cache(resolve_cache_dir(cache_dir)), prepare_device(device or m.device))
    train = record.splits.train
    x = train.x.permute(0, 2, 3, 1).contiguous().numpy()
    out = Path(out)
    digest = write_npz(x, train.y.numpy(), train.classes, out) if fmt == "npz" else write_pngs(x, out)
    return out, digest, len(train)
