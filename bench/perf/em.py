"""``python -m bench.perf em``: error-minimizing noise generation against the same work done
two other ways, side by side in one process.

- ``uebench``: the `em` attack (`attacks.em.loop.min_min`) for exactly ``--rounds`` rounds
  (the stop test is run but never stops it), with its own per-phase timings.
- ``pure``: a hand-written loop doing exactly the same number of source-model steps, PGD
  steps and stop-test forwards on batches built before the clock starts (δ added in place,
  no index bookkeeping, no progress, no stats): the upper bound.
- ``reference``: the official EM code's style on the same settings: a torch ``Dataset`` whose
  ``__getitem__`` turns a PIL image into a tensor (``ToTensor``) and returns its index, a
  ``DataLoader`` (``shuffle=False``) for the model steps (``next(iterator)``), another pass
  over a ``DataLoader`` for PGD, and one for the stop test.

All three run on ``--device`` (the pure and reference loops with the harness's CUDA defaults,
bf16 autocast and channels_last, `bench.perf.device`), with the same model, optimizer (SGD 0.1, momentum 0.9, wd 5e-4, grad clip 5), batch
size, M, T and step; sample-wise and class-wise. Reported: seconds per round (median over
``--reps``), uebench's speed relative to each (``uebench/pure`` ≥ 0.95 means the harness costs
under 5 %; ``uebench/reference`` is its speed-up over the reference style), and where
uebench's time goes (model steps, PGD, stop test).
"""
from __future__ import annotations

import argparse
import statistics
import time

from bench.perf.device import BenchDevice, add_device_argument


def _setup(arch: str, width: int | None, n: int, bd, seed: int = 0):
    import torch

    from bench.data import stratified_indices
    from bench.models import create_model
    from registry import DATASETS

    mini = DATASETS.create("cifar10-mini").load(None)
    train = mini.train.subset(stratified_indices(mini.train.y, n, 0)) if n < len(mini.train) else mini.train
    torch.manual_seed(seed)
    kw = {"width": width} if width else {}
    return train, lambda: bd.model(create_model(arch, num_classes=10, **kw))


def _sgd(model):
    from bench.trainer import sgd

    params = list(model.parameters())
    return sgd(params, params[0].device, lr=0.1, momentum=0.9, weight_decay=5e-4)


def _step(model, opt, xb, yb, bd):
    import torch

    model.train()
    with bd.autocast():
        loss = torch.nn.functional.cross_entropy(model(xb), yb)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
    opt.step()


def _pgd_batch(model, x, d, y, steps, alpha, eps, bd):
    import torch

    p = (x + d).clamp(0, 1)
    for _ in range(steps):
        p = p.detach().requires_grad_(True)
        with bd.autocast():
            loss = torch.nn.functional.cross_entropy(model(p), y)
        (g,) = torch.autograd.grad(loss, p)
        p = p.detach() - alpha * g.sign()
        eta = (p - x).clamp(-eps, eps)
        p = (x + eta).clamp(0, 1)
    return eta


def run_uebench(train, mode: str, rounds: int, bs: int, m: int, t: int, width: int | None, arch: str, bd) -> dict:

    from bench.api import ATTACKS, AttackContext

    params = dict(mode=mode, source_arch=arch, batch_size=bs, train_steps=m, pgd_steps=t, max_rounds=rounds, stop_error=1e-9)
    if width:
        params["source_model_kwargs"] = {"width": width}
    atk = ATTACKS.create("em", **params)
    ctx = AttackContext(bd.dev, 0, 10, tuple(train.x.shape[1:]))
    bd.sync()
    t0 = time.perf_counter()
    pert = atk.generate(train.copy(), ctx)
    bd.sync()
    total = time.perf_counter() - t0
    h = pert.stats["history"]
    return {"round": total / len(h), "model": sum(r["model_s"] for r in h) / len(h), "pgd": sum(r["pgd_s"] for r in h) / len(h),
            "stop": sum(r["stop_s"] for r in h) / len(h)}


def run_pure(train, make, mode: str, rounds: int, bs: int, m: int, t: int, bd) -> float:
    """Seconds per round of the same work on pre-built batches."""
    import torch

    from bench.data import stratified_indices

    n, k = len(train), train.num_classes
    x = bd.input(train.x).float() / 255
    y = train.y.to(bd.dev)
    eps, alpha = 8 / 255, 0.8 / 255
    sub = stratified_indices(train.y, max(k, round(0.2 * n)), 0) if mode == "class" else torch.arange(n)
    g = torch.Generator().manual_seed(0)
    order = torch.randperm(n, generator=g).to(bd.dev)
    sub = sub.to(bd.dev)
    model_batches = [(x[order[i : i + bs]], y[order[i : i + bs]]) for i in range(0, n, bs)]
    pgd_batches = [(x[sub[i : i + bs]], y[sub[i : i + bs]]) for i in range(0, len(sub), bs)]
    d_model = [torch.zeros_like(xb) for xb, _ in model_batches]
    d_pgd = [torch.zeros_like(xb) for xb, _ in pgd_batches]
    model = make()
    opt = _sgd(model)
    bd.sync()
    t0 = time.perf_counter()
    k_step = 0
    for _ in range(rounds):
        for _ in range(m):
            i = k_step % len(model_batches)
            xb, yb = model_batches[i]
            _step(model, opt, xb + d_model[i], yb, bd)
            k_step += 1
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        for i, (xb, yb) in enumerate(pgd_batches):
            d_pgd[i] = _pgd_batch(model, xb, d_pgd[i], yb, t, alpha, eps, bd)
        with torch.inference_mode(), bd.autocast():
            for i, (xb, yb) in enumerate(pgd_batches):
                (model(xb + d_pgd[i]).argmax(1) == yb).sum().item()
        for p in model.parameters():
            p.requires_grad_(True)
    bd.sync()
    return (time.perf_counter() - t0) / rounds


def run_reference(train, make, mode: str, rounds: int, bs: int, m: int, t: int, bd) -> float:
    """Seconds per round in the EM code's style (PIL + ToTensor per sample, DataLoaders, each
    batch moved to the device as the EM code's ``.cuda()`` does)."""
    import numpy as np
    import torch
    from PIL import Image
    from torchvision import transforms as T

    from bench.data import stratified_indices

    n, k = len(train), train.num_classes
    imgs = [Image.fromarray(a) for a in train.x.permute(0, 2, 3, 1).numpy()]
    labels = train.y.numpy().astype(np.int64)
    to_tensor = T.ToTensor()
    eps, alpha = 8 / 255, 0.8 / 255

    class DS(torch.utils.data.Dataset):
        def __init__(self, idx):
            self.idx = idx

        def __len__(self):
            return len(self.idx)

        def __getitem__(self, i):
            j = int(self.idx[i])
            return to_tensor(imgs[j]), int(labels[j]), j

    sub = stratified_indices(train.y, max(k, round(0.2 * n)), 0).numpy() if mode == "class" else np.arange(n)
    delta = torch.zeros((k if mode == "class" else n, 3, 32, 32), device=bd.dev)
    key = (lambda yb, ib: yb) if mode == "class" else (lambda yb, ib: ib)
    train_loader = torch.utils.data.DataLoader(DS(np.arange(n)), batch_size=bs, shuffle=mode == "class", num_workers=0)
    pgd_loader = torch.utils.data.DataLoader(DS(sub), batch_size=bs, shuffle=False, num_workers=0)
    model = make()
    opt = _sgd(model)
    it = iter(train_loader)
    bd.sync()
    t0 = time.perf_counter()
    for _ in range(rounds):
        for _ in range(m):
            try:
                xb, yb, ib = next(it)
            except StopIteration:
                it = iter(train_loader)
                xb, yb, ib = next(it)
            xb, yb, ib = bd.input(xb), yb.to(bd.dev), ib.to(bd.dev)
            _step(model, opt, xb + delta[key(yb, ib)], yb, bd)
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        for xb, yb, ib in pgd_loader:
            xb, yb, ib = bd.input(xb), yb.to(bd.dev), ib.to(bd.dev)
            eta = _pgd_batch(model, xb, delta[key(yb, ib)], yb, t, alpha, eps, bd)
            if mode == "class":
                for c in yb.unique():
                    delta[c] = eta[yb == c].mean(0).clamp(-eps, eps)
            else:
                delta[ib] = eta
        with torch.no_grad(), bd.autocast():
            for xb, yb, ib in pgd_loader:
                xb, yb, ib = bd.input(xb), yb.to(bd.dev), ib.to(bd.dev)
                (model(xb + delta[key(yb, ib)]).argmax(1) == yb).sum().item()
        for p in model.parameters():
            p.requires_grad_(True)
    bd.sync()
    return (time.perf_counter() - t0) / rounds


def bench_em(mode: str, n: int, rounds: int, reps: int, bs: int, m: int, t: int, arch: str, width: int | None, bd) -> dict:
    train, make = _setup(arch, width, n, bd)
    run_pure(train, make, mode, 1, bs, 1, 1, bd)  # warm-up: first-call allocations, lazy imports
    out = {"uebench": [], "pure": [], "reference": [], "model": [], "pgd": [], "stop": [], "ratio_pure": [], "ratio_ref": []}
    for _ in range(reps):  # the loops alternate rep by rep under the same load
        u = run_uebench(train, mode, rounds, bs, m, t, width, arch, bd)
        p = run_pure(train, make, mode, rounds, bs, m, t, bd)
        r = run_reference(train, make, mode, rounds, bs, m, t, bd)
        for key in ("model", "pgd", "stop"):
            out[key].append(u[key])
        out["uebench"].append(u["round"])
        out["pure"].append(p)
        out["reference"].append(r)
        out["ratio_pure"].append(p / u["round"])
        out["ratio_ref"].append(r / u["round"])
    return {k: statistics.median(v) for k, v in out.items()} | {"ratios": out["ratio_pure"]}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--modes", default="sample,class")
    p.add_argument("--n", type=int, default=2000, help="training images (cifar10-mini)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=512, help="the EM code's 512")
    p.add_argument("--train-steps", type=int, default=10, help="M")
    p.add_argument("--pgd-steps", type=int, default=None, help="T (default: 20 sample-wise, 1 class-wise, the EM scripts')")
    p.add_argument("--arch", default="convnet_cifar")
    p.add_argument("--width", type=int, default=None, help="convnet width (default: the model's)")
    add_device_argument(p)


def run(a: argparse.Namespace) -> int:
    import torch

    bd = BenchDevice.from_arg(a.device)
    print(f"torch {torch.__version__}, {bd.describe()}, {a.arch}, batch {a.batch_size}, M {a.train_steps}, "
          f"{a.n} images, {a.rounds} rounds x {a.reps} reps (median seconds per round)")
    print(f"{'mode':<8}{'T':>4}{'uebench':>10}{'pure':>9}{'reference':>11}{'uebench/pure':>14}{'uebench/reference':>19}"
          f"{'model steps':>13}{'PGD':>8}{'stop test':>11}")
    for mode in a.modes.split(","):
        t = a.pgd_steps or (20 if mode == "sample" else 1)
        r = bench_em(mode, a.n, a.rounds, a.reps, a.batch_size, a.train_steps, t, a.arch, a.width, bd)
        u = r["uebench"]
        print(f"{mode:<8}{t:>4}{u:>10.2f}{r['pure']:>9.2f}{r['reference']:>11.2f}{r['ratio_pure']:>14.2f}{r['ratio_ref']:>19.2f}"
              f"{r['model'] / u:>12.0%}{r['pgd'] / u:>8.0%}{r['stop'] / u:>11.0%}")
        print(f"  {mode}: uebench/pure of each rep " + " ".join(f"{x:.2f}" for x in r["ratios"]))
    return 0
