"""``python -m bench.perf st``: what progressive staged training adds to an epoch.

ST measures ACM after every epoch: a forward pass over its validation set V (100 poisoned
training images per class), a 2-D embedding of the penultimate activations (t-SNE, the
paper's; or PCA), and the cluster score. Trained here on cifar10-mini with both embeddings,
next to standard training of the same model: the ACM seconds per epoch as a share of the
training epoch, and the epoch time relative to standard training, on ``--device``.
"""
from __future__ import annotations

import argparse
import json
import statistics

from bench.perf.device import BenchDevice, add_device_argument


def bench_st(arch: str, n: int, epochs: int, val_per_class: int, bd) -> list[dict]:
    import torch

    from bench.data import stratified_indices
    from bench.defense import DefenseStack
    from bench.models import create_model
    from bench.train_config import TrainConfig
    from bench.trainer import fit
    from registry import DATASETS

    mini = DATASETS.create("cifar10-mini").load(None)
    train = mini.train.subset(stratified_indices(mini.train.y, n, 0))
    test = mini.test
    cfg = TrainConfig(epochs=epochs, batch_size=128, lr=0.05)
    out = []
    torch.manual_seed(0)
    std = fit(create_model(arch, num_classes=10), train, test, cfg, seed=0, device=bd.dev)
    std_epoch = statistics.median(c["train_seconds"] for c in std.curve)
    out.append({"defense": "standard", "epoch": std_epoch, "acm": 0.0})
    for emb in ("tsne", "pca"):
        torch.manual_seed(0)
        stack = DefenseStack.build([("st", {"embedding": emb, "val_per_class": val_per_class, "tau": 1e9, "select_n": 0})])  # no rollback or selection
        res = fit(create_model(arch, num_classes=10), train, test, cfg, stack, seed=0, device=bd.dev)
        hist = json.loads(json.dumps(res.extra))["st"]["acm_history"]
        acm = statistics.median(h["acm_seconds"] for h in hist)
        epoch = statistics.median(c["train_seconds"] for c in res.curve)
        out.append({"defense": f"st ({emb})", "epoch": epoch, "acm": acm})
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--arch", default="convnet_cifar")
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--val-per-class", type=int, default=100, help="V per class (the paper: 100 on CIFAR-10)")
    add_device_argument(p)


def run(a: argparse.Namespace) -> int:
    import torch

    bd = BenchDevice.from_arg(a.device)
    rows = bench_st(a.arch, a.n, a.epochs, a.val_per_class, bd)
    std = rows[0]["epoch"]
    print(f"torch {torch.__version__}, {bd.describe()}, {a.arch}, {a.n} images, V = {a.val_per_class}/class, "
          f"{a.epochs} epochs (medians)")
    print(f"{'defense':<12}{'epoch s':>9}{'ACM s':>8}{'ACM / epoch':>13}{'(epoch + ACM) / standard':>26}")
    for r in rows:
        print(f"{r['defense']:<12}{r['epoch']:>9.2f}{r['acm']:>8.2f}{r['acm'] / r['epoch']:>12.0%}{(r['epoch'] + r['acm']) / std:>26.2f}")
    return 0
