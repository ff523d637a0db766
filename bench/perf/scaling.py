"""``python -m bench.perf scaling``: cost against the amount of data.

The trainer's images/s and sample-wise EM's seconds per round at growing numbers of real
CIFAR-10 training images (the full 50,000 fit in memory as uint8: 150 MB). Images/s should stay
flat and EM's seconds per round grow linearly with the images (its PGD pass covers them all;
its M model steps per round do not depend on them). Needs the CIFAR-10 copy under
``--data-root`` (``<root>/cifar10/train.npz``). Runs on ``--device``.
"""
from __future__ import annotations

import argparse
import time

from bench.perf.device import BenchDevice, add_device_argument


def bench_scaling(sizes: list[int], data_root, arch: str, epochs: int, pgd_steps: int, bd) -> list[dict]:
    import torch

    from bench.api import ATTACKS, AttackContext
    from bench.data import stratified_indices
    from bench.models import create_model
    from bench.train_config import TrainConfig
    from bench.trainer import fit
    from registry import DATASETS

    full = DATASETS.create("cifar10", download=False).load(data_root)
    test = full.test.subset(stratified_indices(full.test.y, 500, 0))
    out = []
    for n in sizes:
        train = full.train.subset(stratified_indices(full.train.y, n, 0))
        torch.manual_seed(0)
        res = fit(create_model(arch, num_classes=10), train, test, TrainConfig(epochs=epochs, batch_size=128, lr=0.05, eval_every=10**5), seed=0,
                  device=bd.dev)
        atk = ATTACKS.create("em", source_arch=arch, batch_size=512, pgd_steps=pgd_steps, max_rounds=2, stop_error=1e-9)
        bd.sync()
        t0 = time.perf_counter()
        pert = atk.generate(train.copy(), AttackContext(bd.dev, 0, 10, (3, 32, 32)))
        bd.sync()
        per_round = (time.perf_counter() - t0) / len(pert.stats["history"])
        out.append({"n": n, "ips": res.images_per_second, "em_round": per_round})
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sizes", default="2000,10000,50000")
    p.add_argument("--data-root", default=None, help="the folder holding cifar10/train.npz (default: the data root setting)")
    p.add_argument("--arch", default="convnet_cifar")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--pgd-steps", type=int, default=20)
    add_device_argument(p)


def run(a: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from bench.datasets.common import resolve_data_root

    root = Path(a.data_root) if a.data_root else resolve_data_root(None)
    bd = BenchDevice.from_arg(a.device)
    rows = bench_scaling([int(s) for s in a.sizes.split(",")], root, a.arch, a.epochs, a.pgd_steps, bd)
    print(f"torch {torch.__version__}, {bd.describe()}, {a.arch}; EM: batch 512, M 10, T {a.pgd_steps}")
    print(f"{'images':>8}{'trainer img/s':>15}{'EM s/round':>12}{'EM s/round per 1k images':>26}")
    for r in rows:
        print(f"{r['n']:>8,}{r['ips']:>15.0f}{r['em_round']:>12.1f}{r['em_round'] / r['n'] * 1000:>26.2f}")
    return 0
