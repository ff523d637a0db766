"""``python -m bench.perf at``: PGD adversarial training in the trainer against the same work
done two other ways, epoch by epoch side by side.

- ``trainer``: `bench.trainer.fit` with the `at` defense (PGD-k crafted in eval mode from a
  Gaussian start, then one train-mode step on the adversarial batch), timed over its epochs.
- ``pure``: the same model, optimizer and k on batches cropped and flipped before the clock
  starts: per step k input-gradient passes and one training pass, nothing else.
- ``reference``: the EM code's ``madrys.py`` style: PIL ``RandomCrop(32, 4)``,
  ``RandomHorizontalFlip`` and ``ToTensor`` per sample through a ``DataLoader``, then the same
  PGD and step.

All three run on ``--device``, the pure and reference loops with the trainer's CUDA defaults
(bf16 autocast, channels_last: `bench.perf.device`). The loops alternate epoch by epoch (the pure and reference epochs run from the trainer's
progress callback, outside its epoch timing), so they share the machine's load. Reported:
images/s (median epoch) and the trainer's speed relative to each (``trainer/pure`` ≥ 0.95
means the harness costs under 5 %; ``trainer/reference`` is its speed-up over madrys.py).
"""
from __future__ import annotations

import argparse
import statistics
import time

from bench.perf.device import BenchDevice, add_device_argument


def _pgd_step(model, opt, xb, yb, steps: int, eps: float, alpha: float, g, bd) -> None:
    import torch

    model.eval()
    noise = torch.randn(xb.shape, generator=g, device=g.device).to(xb.device)
    x_adv = (xb + alpha * noise).clamp(xb - eps, xb + eps).clamp(0, 1)
    for _ in range(steps):
        x_adv = x_adv.detach().requires_grad_(True)
        with bd.autocast():
            adv_loss = torch.nn.functional.cross_entropy(model(x_adv), yb)
        (grad,) = torch.autograd.grad(adv_loss, x_adv)
        x_adv = torch.minimum(torch.maximum(x_adv.detach() + alpha * grad.sign(), xb - eps), xb + eps).clamp(0, 1)
    model.train()
    with bd.autocast():
        loss = torch.nn.functional.cross_entropy(model(x_adv), yb)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def bench_at(arch: str, n: int, bs: int, epochs: int, steps: int, reps: int, bd) -> dict:
    import numpy as np
    import torch
    from PIL import Image
    from torchvision import transforms as T

    from bench.batches import crop_flip, steps_per_epoch
    from bench.data import stratified_indices
    from bench.defense import DefenseStack
    from bench.models import create_model
    from bench.train_config import TrainConfig
    from bench.trainer import fit, sgd
    from registry import DATASETS

    mini = DATASETS.create("cifar10-mini").load(None)
    train = mini.train.subset(stratified_indices(mini.train.y, n, 0))
    test = mini.test.subset(torch.arange(0, len(mini.test), 10))
    eps, alpha = 8 / 255, 2 / 255
    g = torch.Generator(device=bd.dev).manual_seed(0)
    gc = torch.Generator().manual_seed(0)
    padded = torch.nn.functional.pad(train.x, (4,) * 4)
    nsteps = steps_per_epoch(len(train), bs)
    prebuilt = []
    for _ in range(2):
        perm = torch.randperm(len(train), generator=gc)
        xe = bd.input(crop_flip(padded, perm, (32, 32), 4, True, gc)).float() / 255
        ye = train.y[perm].to(bd.dev)
        prebuilt.append([(xe[s * bs : (s + 1) * bs], ye[s * bs : (s + 1) * bs]) for s in range(nsteps)])
    imgs = [Image.fromarray(a) for a in train.x.permute(0, 2, 3, 1).numpy()]
    labels = train.y.numpy().astype(np.int64)
    tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor()])

    class DS(torch.utils.data.Dataset):
        def __len__(self):
            return len(imgs)

        def __getitem__(self, i):
            return tf(imgs[i]), int(labels[i])

    loader = torch.utils.data.DataLoader(DS(), batch_size=bs, shuffle=True, num_workers=0)

    def fresh():
        torch.manual_seed(0)
        m = bd.model(create_model(arch, num_classes=10))
        params = list(m.parameters())
        return m, sgd(params, params[0].device, lr=0.05, momentum=0.9, weight_decay=5e-4)

    cfg = TrainConfig(epochs=epochs, batch_size=bs, lr=0.05, schedule="constant", grad_clip=None, eval_every=10**5)
    stack = lambda: DefenseStack.build([("at", {"steps": steps})])
    fit(fresh()[0], train.subset(torch.arange(min(len(train), bs * 2))), test, cfg.model_copy(update={"epochs": 1}), stack(), seed=0, device=bd.dev)  # warm-up
    speeds: dict[str, list[float]] = {"trainer": [], "pure": [], "reference": []}
    r_pure, r_ref = [], []
    for _ in range(reps):
        (mp, op), (mr, orf) = fresh(), fresh()
        pure_s, ref_s = [], []

        def between(done, total, **_):
            bd.sync()
            t0 = time.perf_counter()
            for xb, yb in prebuilt[done % 2]:
                _pgd_step(mp, op, xb, yb, steps, eps, alpha, g, bd)
            bd.sync()
            pure_s.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            for xb, yb in loader:
                _pgd_step(mr, orf, bd.input(xb), yb.to(bd.dev), steps, eps, alpha, g, bd)
            bd.sync()
            ref_s.append(time.perf_counter() - t0)

        res = fit(fresh()[0], train, test, cfg, stack(), seed=0, progress=between, device=bd.dev)
        tr_s = [c["train_seconds"] for c in res.curve]
        for name, v in (("trainer", tr_s), ("pure", pure_s), ("reference", ref_s)):
            speeds[name] += v
        r_pure.append(statistics.median(pure_s) / statistics.median(tr_s))
        r_ref.append(statistics.median(ref_s) / statistics.median(tr_s))
    out = {k: len(train) / statistics.median(v) for k, v in speeds.items()}
    return {**out, "ratio_pure": statistics.median(r_pure), "ratio_ref": statistics.median(r_ref), "ratios": r_pure}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--archs", default="convnet_cifar")
    p.add_argument("--n", type=int, default=1000, help="training images (cifar10-mini)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--steps", type=int, default=10, help="PGD steps (madrys.py: 10)")
    p.add_argument("--reps", type=int, default=3)
    add_device_argument(p)


def run(a: argparse.Namespace) -> int:
    import torch

    bd = BenchDevice.from_arg(a.device)
    print(f"torch {torch.__version__}, {bd.describe()}, PGD-{a.steps}, batch {a.batch_size}, {a.n} images, "
          f"{a.epochs} epochs x {a.reps} reps (median epoch)")
    print(f"{'model':<15}{'trainer':>9}{'pure':>9}{'reference':>11}{'trainer/pure':>14}{'trainer/reference':>19}   (images/s)")
    for arch in a.archs.split(","):
        r = bench_at(arch, a.n, a.batch_size, a.epochs, a.steps, a.reps, bd)
        print(f"{arch:<15}{r['trainer']:>9.0f}{r['pure']:>9.0f}{r['reference']:>11.0f}{r['trainer'] / r['pure']:>14.2f}"
              f"{r['trainer'] / r['reference']:>19.2f}")
        print(f"  {arch}: trainer/pure of each rep " + " ".join(f"{x:.2f}" for x in r["ratios"]))
    return 0
