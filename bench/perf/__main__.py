"""``python -m bench.perf trainer``: the trainer's throughput against a pure training loop.

For each model (the small convnet and the MLP) three loops train on the same real images
(cifar10-mini), same batch size, same optimizer, interleaved in one process so machine
noise hits all of them alike:

- ``pure``: forward + backward + SGD step on batches built before the clock starts (an upper
  bound: no data movement, no augmentation, no bookkeeping);
- ``trainer``: `bench.trainer.fit` (uint8 data on the device, batched crop + flip, schedule,
  accuracy bookkeeping), timed over its training loop as it reports it;
- ``dataloader``: the reference code's style: PIL RandomCrop(32, 4) + RandomHorizontalFlip +
  ToTensor through a torch DataLoader (``--workers``, default 0).

It prints images/s per loop (median over ``--reps``) and the ratios to ``pure``.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time


def _pure(model, xs, ys, opt, loss_fn) -> float:
    t0 = time.perf_counter()
    n = 0
    for xb, yb in zip(xs, ys):
        loss = loss_fn(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        n += len(xb)
    return n / (time.perf_counter() - t0)


def _dataloader(model, data, bs, opt, loss_fn, workers) -> float:
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

    loader = torch.utils.data.DataLoader(DS(), batch_size=bs, shuffle=True, num_workers=workers, drop_last=True)
    t0 = time.perf_counter()
    n = 0
    for xb, yb in loader:
        loss = loss_fn(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        n += len(xb)
    return n / (time.perf_counter() - t0)


def bench_trainer(archs: list[str], n: int, bs: int, epochs: int, reps: int, workers: int) -> list[dict]:
    import torch

    from bench.data import stratified_indices
    from bench.models import create_model
    from bench.train_config import TrainConfig
    from bench.trainer import fit
    from registry import DATASETS

    mini = DATASETS.create("cifar10-mini").load(None)
    train = mini.train.subset(stratified_indices(mini.train.y, n, 0))
    test = mini.test.subset(torch.arange(0, len(mini.test), 10))
    # Same optimizer work in every loop: no grad clipping, constant lr, no channels_last on CPU.
    cfg = TrainConfig(epochs=epochs, batch_size=bs, lr=0.01, schedule="constant", grad_clip=None, eval_every=10**6)
    loss_fn = torch.nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(0)
    xs, ys = [], []
    for _ in range(epochs):
        perm = torch.randperm(len(train), generator=g)
        for s in range(0, len(train) - bs + 1, bs):
            xs.append(train.x[perm[s : s + bs]].float() / 255)
            ys.append(train.y[perm[s : s + bs]])
    out = []
    for arch in archs:
        speeds: dict[str, list[float]] = {"pure": [], "trainer": [], "dataloader": []}

        def fresh():
            torch.manual_seed(0)
            m = create_model(arch, num_classes=10)
            return m, torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)

        m, opt = fresh()
        _pure(m, xs[:3], ys[:3], opt, loss_fn)  # warm-up
        for _ in range(reps):
            m, opt = fresh()
            speeds["pure"].append(_pure(m, xs, ys, opt, loss_fn))
            m, _ = fresh()
            speeds["trainer"].append(fit(m, train, test, cfg, seed=0).images_per_second)
            m, opt = fresh()
            speeds["dataloader"].append(
                statistics.mean(_dataloader(m, train, bs, opt, loss_fn, workers) for _ in range(epochs))
            )
        med = {k: statistics.median(v) for k, v in speeds.items()}
        out.append({"arch": arch, **med})
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.perf", description=__doc__.splitlines()[0])
    p.add_argument("what", choices=["trainer"])
    p.add_argument("--archs", default="convnet_cifar,mlp")
    p.add_argument("--n", type=int, default=2000, help="training images (from cifar10-mini)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers of the reference-style loop")
    a = p.parse_args(argv)
    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {a.batch_size}, {a.n} images x {a.epochs} epochs, median of {a.reps}")
    rows = bench_trainer(a.archs.split(","), a.n, a.batch_size, a.epochs, a.reps, a.workers)
    print(f"{'model':<16}{'pure img/s':>12}{'trainer img/s':>15}{'dataloader img/s':>18}{'trainer/pure':>14}{'dataloader/pure':>17}")
    for r in rows:
        print(
            f"{r['arch']:<16}{r['pure']:>12.0f}{r['trainer']:>15.0f}{r['dataloader']:>18.0f}"
            f"{r['trainer'] / r['pure']:>14.2f}{r['dataloader'] / r['pure']:>17.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
