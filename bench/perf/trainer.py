"""``python -m bench.perf trainer``: the trainer's throughput against a pure training loop.

For each model (the small convnet and the MLP) four loops train on the same real images
(cifar10-mini), same batch size, same optimizer, interleaved in one process so machine
noise hits all of them alike:

- ``pure``: forward + backward + SGD step on batches built before the clock starts (an upper
  bound: no data movement, no augmentation, no bookkeeping);
- ``trainer``: `bench.trainer.fit` (uint8 data on the device, batched crop + flip, schedule,
  accuracy bookkeeping), timed over its training loop as it reports it;
- ``dataloader``: the reference code's style: PIL RandomCrop(32, 4) + RandomHorizontalFlip +
  ToTensor through a torch DataLoader (``--workers``, default 0).

``pure`` is the loop a user writes by hand, with torch's default SGD; the trainer uses the
fused SGD kernel where torch has one (`bench.trainer.sgd`: same update, one kernel), so a
fourth loop, ``pure-fused``, is the pure loop with that same optimizer: trainer/pure-fused is
what the trainer's data pipeline and bookkeeping alone cost.

Every loop runs on ``--device``; there the pure and reference loops get the trainer's CUDA
defaults (bf16 autocast, channels_last: `bench.perf.device`), and the pure loops' batches are
built on the device, as the trainer's uint8 set lives there.

The pure loops get the trainer's exact batch sizes (the last, partial batch too), every loop
is warmed up first, and runs last at least ``--min-seconds``. The loops alternate epoch by
epoch: after each trainer epoch, fit's progress callback runs one epoch of each pure loop
(outside fit's epoch timing), so neighbouring epochs share the machine's state and load. A
loop's images/s comes from its median epoch time over all ``--reps`` (a burst of load on a
shared machine slows a few epochs, not the median); a ratio is the median over reps of the
ratio within a rep, whose epochs ran side by side. It prints those and each rep's ratio.
"""
from __future__ import annotations

import argparse
import statistics
import time

from bench.perf.device import BenchDevice, add_device_argument

_PREPARED_EPOCHS = 2
"""Distinct shuffled epochs of pre-built batches the pure loops cycle through."""


def _pure(model, xs, ys, opt, loss_fn, epochs: int, bd, first: int = 0) -> list[float]:
    """Seconds of each of ``epochs`` passes over the pre-built batches (cycling through the
    prepared epochs, starting at epoch ``first``)."""
    per_epoch = len(xs) // _PREPARED_EPOCHS
    out = []
    for e in range(first, first + epochs):
        k = e % _PREPARED_EPOCHS
        bd.sync()
        t0 = time.perf_counter()
        for xb, yb in zip(xs[k * per_epoch : (k + 1) * per_epoch], ys[k * per_epoch : (k + 1) * per_epoch]):
            with bd.autocast():
                loss = loss_fn(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        bd.sync()
        out.append(time.perf_counter() - t0)
    return out


def _dataloader(model, data, bs, opt, loss_fn, workers, bd) -> float:
    import numpy as np
    import torch
    from PIL import Image
    from torchvision import transforms as T

    tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor()])
    imgs = [Image.fromarray(a) for a in data.x.permute(0, 2, 3, 1).numpy()]
    labels = data.y.numpy().astype(np.int64)

    class DS(torch.utils.data.Dataset):
        def __len__(self):
            return len(imgs)

        def __getitem__(self, i):
            return tf(imgs[i]), int(labels[i])

    loader = torch.utils.data.DataLoader(DS(), batch_size=bs, shuffle=True, num_workers=workers, drop_last=True,
                                         pin_memory=bd.dev.type == "cuda")
    bd.sync()
    t0 = time.perf_counter()
    n = 0
    for xb, yb in loader:
        xb, yb = bd.input(xb), yb.to(bd.dev, non_blocking=True)
        with bd.autocast():
            loss = loss_fn(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        n += len(xb)
    bd.sync()
    return n / (time.perf_counter() - t0)


def bench_trainer(
    archs: list[str], n: int, bs: int, epochs: int, reps: int, workers: int, min_seconds: float, bd
) -> list[dict]:
    import math

    import torch

    from bench.batches import steps_per_epoch
    from bench.data import stratified_indices
    from bench.models import create_model
    from bench.train_config import TrainConfig
    from bench.trainer import fit
    from registry import DATASETS

    mini = DATASETS.create("cifar10-mini").load(None)
    train = mini.train.subset(stratified_indices(mini.train.y, n, 0))
    test = mini.test.subset(torch.arange(0, len(mini.test), 10))
    loss_fn = torch.nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(0)
    xs, ys = [], []
    steps = steps_per_epoch(len(train), bs)  # the trainer's batches, last partial one too
    for _ in range(_PREPARED_EPOCHS):
        perm = torch.randperm(len(train), generator=g)
        for s in range(0, steps * bs, bs):
            xs.append(bd.input(train.x[perm[s : s + bs]]).float() / 255)
            ys.append(train.y[perm[s : s + bs]].to(bd.dev))
    out = []
    for arch in archs:

        def fresh(fused: bool = False):
            torch.manual_seed(0)
            m = bd.model(create_model(arch, num_classes=10))
            kw = {"fused": True} if fused else {}
            return m, torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4, **kw)

        # warm-up of every loop (first-call allocations, lazy imports); it also sizes the runs
        warm_cfg = TrainConfig(epochs=1, batch_size=bs, lr=0.01, schedule="constant", grad_clip=None)
        fit(fresh()[0], train.subset(torch.arange(min(len(train), bs * 2))), test, warm_cfg, seed=0, device=bd.dev)
        m, opt = fresh(fused=True)
        _pure(m, xs[:2], ys[:2], opt, loss_fn, 1, bd)
        m, opt = fresh()
        epoch_s = _pure(m, xs, ys, opt, loss_fn, 1, bd)[0]
        run_epochs = max(epochs, math.ceil(min_seconds / epoch_s))
        # same optimizer work in both loops: no grad clipping, constant lr; the device's defaults
        cfg = warm_cfg.model_copy(update={"epochs": run_epochs, "eval_every": 10**5})

        epochs_s: dict[str, list[float]] = {"pure": [], "pure_fused": [], "trainer": [], "dataloader": []}
        ratios: list[float] = []
        fused_ratios: list[float] = []
        for _ in range(reps):
            # after each trainer epoch, fit's progress callback (outside fit's epoch timing) runs
            # one epoch of each pure loop, so all of them alternate epoch by epoch under one load
            (m, opt), (mf, optf) = fresh(), fresh(fused=True)
            pure_s: list[float] = []
            fused_s: list[float] = []

            def between(done, total, **_):
                pure_s.extend(_pure(m, xs, ys, opt, loss_fn, 1, bd, done))
                fused_s.extend(_pure(mf, xs, ys, optf, loss_fn, 1, bd, done))

            trainer_s = [c["train_seconds"] for c in fit(fresh()[0], train, test, cfg, seed=0, progress=between, device=bd.dev).curve]
            epochs_s["pure"] += pure_s
            epochs_s["pure_fused"] += fused_s
            epochs_s["trainer"] += trainer_s
            ratios.append(statistics.median(pure_s) / statistics.median(trainer_s))
            fused_ratios.append(statistics.median(fused_s) / statistics.median(trainer_s))
            m, opt = fresh()
            epochs_s["dataloader"].append(len(train) / _dataloader(m, train, bs, opt, loss_fn, workers, bd))
        speed = {k: len(train) / statistics.median(v) for k, v in epochs_s.items()}
        out.append(
            {
                "arch": arch,
                "epochs": run_epochs,
                **speed,
                "ratio": statistics.median(ratios),
                "fused_ratio": statistics.median(fused_ratios),
                "ratios": ratios,
            }
        )
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--archs", default="convnet_cifar,mlp")
    p.add_argument("--n", type=int, default=2000, help="training images (from cifar10-mini)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=2, help="at least this many epochs per run")
    p.add_argument("--min-seconds", type=float, default=2.0, help="more epochs until a run lasts about this long")
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers of the reference-style loop")
    add_device_argument(p)


def run(a: argparse.Namespace) -> int:
    import torch

    bd = BenchDevice.from_arg(a.device)
    print(f"torch {torch.__version__}, {bd.describe()}, batch {a.batch_size}, {a.n} images, {a.reps} reps, median epoch")
    rows = bench_trainer(a.archs.split(","), a.n, a.batch_size, a.epochs, a.reps, a.workers, a.min_seconds, bd)
    print(
        f"{'model':<15}{'epochs':>7}{'pure':>9}{'pure-fused':>12}{'trainer':>9}{'dataloader':>12}"
        f"{'trainer/pure':>14}{'trainer/pure-fused':>20}{'dataloader/pure':>17}   (images/s)"
    )
    for r in rows:
        print(
            f"{r['arch']:<15}{r['epochs']:>7}{r['pure']:>9.0f}{r['pure_fused']:>12.0f}{r['trainer']:>9.0f}{r['dataloader']:>12.0f}"
            f"{r['ratio']:>14.2f}{r['fused_ratio']:>20.2f}{r['dataloader'] / r['pure']:>17.2f}"
        )
    for r in rows:
        pairs = " ".join(f"{x:.2f}" for x in r["ratios"])
        print(f"{r['arch']}: trainer/pure of each rep {pairs}")
    return 0
