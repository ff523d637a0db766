"""The exploiter's training engine, built for speed in the manner of airbench.

The whole train set lives on the device as uint8; each epoch's crops and flips are one
``index_select`` and each float batch is a cast into a kept two-batch buffer
(`bench.batches`), so there is no per-sample Python, no DataLoader and no worker process.
Per step, only the model's own work, a batch cast and two list appends run. Defenses plug in
through the hooks of `bench.defense.Defense`; the loop below is the only training loop in
the project.
"""
from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bench.batches import EpochAugmenter, float_batches, float_buffer, steps_per_epoch, to_float
from bench.defense import DefenseStack, EpochState
from bench.device import autocast_for, prepare_device
from bench.train_config import TrainConfig
from registry.lazy import lazy_import

if TYPE_CHECKING:
    import torch

    from bench.data import ImageData
else:
    torch = lazy_import("torch")


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass
class TrainResult:
    clean_acc_final: float
    clean_acc_peak: float
    peak_epoch: int
    train_acc_final: float
    epochs_run: int
    train_seconds: float
    eval_seconds: float
    images_per_second: float
    rollbacks: int
    curve: list[dict] = field(default_factory=list)
    extra: dict = field(default_factory=dict)


def lr_at(cfg: TrainConfig, epoch: int, step: int, steps_per_epoch: int) -> float:
    """Learning rate for ``step`` of ``epoch``: cosine/multistep per epoch as the reference
    code (CosineAnnealingLR stepped each epoch), onecycle per step as airbench."""
    if cfg.schedule == "cosine":
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * epoch / cfg.epochs))
    if cfg.schedule == "multistep":
        passed = sum(epoch >= m * cfg.epochs for m in cfg.milestones)
        return cfg.lr * cfg.gamma**passed
    if cfg.schedule == "onecycle":
        total = cfg.epochs * steps_per_epoch
        t = epoch * steps_per_epoch + step
        warm = max(1, int(cfg.warmup_frac * total))
        return cfg.lr * (t / warm if t < warm else max(0.0, (total - t) / max(1, total - warm)))
    return cfg.lr


def accuracy(
    model: "torch.nn.Module",
    x: "torch.Tensor",
    y: "torch.Tensor",
    batch_size: int = 1024,
    channels_last: bool = False,
    amp: bool = False,
) -> float:
    """Top-1 accuracy of ``model`` (in eval mode) on uint8 or float images."""
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=y.device)
    dev = next(model.parameters()).device
    with torch.inference_mode(), autocast_for(dev, amp):
        for s in range(0, len(x), batch_size):
            xb = x[s : s + batch_size].to(dev)
            xb = to_float(xb, channels_last) if xb.dtype == torch.uint8 else xb
            correct += (model(xb).argmax(1) == y[s : s + batch_size].to(dev)).sum().to(correct.device)
    model.train(was_training)
    return float(correct) / max(1, len(x))


def fit(
    model: "torch.nn.Module",
    train: "ImageData",
    test: "ImageData",
    cfg: TrainConfig = TrainConfig(),
    stack: DefenseStack | None = None,
    seed: int = 0,
    device: "torch.device | str | None" = None,
    progress: Callable[..., Any] | None = None,
    holdout: "ImageData | None" = None,
) -> TrainResult:
    """Train ``model`` on ``train`` (possibly poisoned), evaluating on clean ``test`` each epoch.

    ``holdout`` (clean images withheld from training, never the test set) is handed to the
    defenses that use a few clean images."""
    stack = stack or DefenseStack()
    dev = prepare_device(device)
    channels_last = cfg.channels_last if cfg.channels_last is not None else dev.type == "cuda"
    model = model.to(dev)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    net = torch.compile(model) if cfg.compile else model

    # the defenses get copies: a hook that works in place must not change the published
    # poison that the next cell trains on, nor the clean test set
    x_train = stack.transform_train(train.x.to(dev, copy=True))
    y_train = train.y.to(dev, copy=True)
    x_test = stack.transform_test(test.x.to(dev, copy=True))
    y_test = test.y.to(dev)
    if x_train.dtype != torch.uint8 or x_test.dtype != torch.uint8:
        raise TypeError(f"transform_train/transform_test must return uint8 images, got {x_train.dtype}/{x_test.dtype}")
    held = None if holdout is None else holdout.with_images(stack.transform_test(holdout.x.to(dev, copy=True))).to(dev)
    stack.setup(model, train.with_images(x_train).with_labels(y_train), train.num_classes, held)
    wants_rollback = stack.overrides("on_epoch_end")
    transforms_batch, steps_itself = stack.overrides("batch_transform"), stack.overrides("training_step")

    g = torch.Generator(device=dev).manual_seed(seed)
    n = len(x_train)
    curve: list[dict] = []
    rollbacks, global_epoch, train_seconds, eval_seconds, images = 0, 0, 0.0, 0.0, 0
    train_acc = 0.0
    stages = [cfg] + [cfg.model_copy(update=s) for s in stack.extra_stages()]

    for stage, scfg in enumerate(stages):
        groups = stack.param_groups(model) or [{"params": list(model.parameters())}]
        for grp in groups:
            grp.setdefault("lr_mult", 1.0)
        opt = sgd(groups, dev, lr=scfg.lr, momentum=scfg.momentum, weight_decay=scfg.weight_decay, nesterov=scfg.nesterov)
        pad = scfg.crop_padding if scfg.augment == "crop_flip" else 0
        augmenter = EpochAugmenter(x_train, pad) if scfg.augment != "none" else None
        bs = scfg.batch_size
        steps = steps_per_epoch(n, bs)
        ckpt = _snapshot(model, opt) if wants_rollback else None
        loss_fn = _loss_fn(scfg)
        amp = autocast_for(dev, scfg.amp)  # reusable: entered and left once per step
        fbuf = float_buffer(x_train, bs, channels_last)

        for epoch in range(scfg.epochs):
            t0 = time.perf_counter()
            model.train()
            perm = torch.randperm(n, device=dev, generator=g)
            # the whole epoch's batches in a few large ops (airbench's trick: per-op overhead,
            # not arithmetic, dominates small batches); index_select, not x[perm], is the fast path
            y_epoch = y_train.index_select(0, perm)
            x_epoch = augmenter(perm, g) if augmenter else x_train.index_select(0, perm)
            # per-step bookkeeping is a list append; losses and predictions are reduced once per epoch
            step_losses: list = []
            step_logits: list = []
            sizes = [min(bs, n - k * bs) for k in range(steps)]
            applied_lr = None  # lr_mult may have changed at the last epoch's end
            batches = float_batches(x_epoch, bs, steps, fbuf)
            for step in range(steps):
                lr = lr_at(scfg, epoch, step, steps)
                if lr != applied_lr:
                    for grp in opt.param_groups:
                        grp["lr"] = lr * grp["lr_mult"]
                    applied_lr = lr
                xb, yt = next(batches), y_epoch[step * bs : (step + 1) * bs]
                if transforms_batch:
                    xb, yt = stack.batch_transform(xb, yt, g)
                with amp:
                    out = stack.training_step(net, xb, yt, loss_fn) if steps_itself else None
                    if out is None:
                        logits = net(xb)
                        loss = loss_fn(logits, yt)
                    else:  # a defense's own step: (loss, logits), its forward counting for train accuracy
                        loss, logits = out if isinstance(out, tuple) else (out, None)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if scfg.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), scfg.grad_clip)
                opt.step()
                step_losses.append(loss.detach())
                step_logits.append(None if logits is None else logits.detach())
            seen = sum(sizes)
            train_loss = float((torch.stack(step_losses).float() * torch.tensor(sizes, device=dev)).sum()) / max(1, seen)
            if not math.isfinite(train_loss):
                raise TrainingDiverged(f"loss is {train_loss} in stage {stage} epoch {epoch}")
            train_acc = float((_predictions(step_logits, sizes, dev) == y_epoch[:seen]).sum()) / max(1, seen)
            epoch_seconds = time.perf_counter() - t0
            train_seconds += epoch_seconds
            images += seen

            last = epoch == scfg.epochs - 1
            test_acc = None
            t1 = time.perf_counter()
            if last or (epoch + 1) % scfg.eval_every == 0:
                test_acc = accuracy(net, x_test, y_test, scfg.eval_batch_size, channels_last, scfg.amp)
            epoch_eval_seconds = time.perf_counter() - t1
            eval_seconds += epoch_eval_seconds

            state = EpochState(stage, epoch, model, opt, train_acc, train_loss, dev)
            action = stack.on_epoch_end(state) if wants_rollback else "continue"
            if action == "rollback":
                rollbacks += 1
                _restore(model, opt, ckpt)
            elif wants_rollback:
                ckpt = _snapshot(model, opt)
            curve.append(
                {
                    "stage": stage,
                    "epoch": global_epoch,
                    "lr": lr_at(scfg, epoch, 0, steps),
                    "train_loss": round(train_loss, 6),
                    "train_acc": round(train_acc, 6),
                    "test_acc": None if test_acc is None else round(test_acc, 6),
                    "action": action,
                    "train_seconds": round(epoch_seconds, 4),
                    "eval_seconds": round(epoch_eval_seconds, 4),
                }
            )
            if progress is not None:
                progress(global_epoch + 1, sum(s.epochs for s in stages), test_acc=test_acc, train_acc=train_acc)
            global_epoch += 1

    evaluated = [(c["test_acc"], c["epoch"]) for c in curve if c["test_acc"] is not None]
    final = evaluated[-1][0]
    replaced = stack.on_train_end(model)  # e.g. ST ends with the best model it saw
    if curve[-1]["action"] == "rollback" or replaced:  # the model was restored: evaluate what training kept
        final = accuracy(net, x_test, y_test, cfg.eval_batch_size, channels_last, cfg.amp)
    # a rolled-back epoch's model was discarded, so the peak is taken over the models training
    # kept; the model it ends with is kept too (ST may end with a model whose epoch was rolled back)
    kept = [(c["test_acc"], c["epoch"]) for c in curve if c["test_acc"] is not None and c["action"] != "rollback"]
    peak, peak_epoch = max([*kept, (final, curve[-1]["epoch"])], key=lambda t: (t[0], -t[1]))
    return TrainResult(
        clean_acc_final=final,
        clean_acc_peak=peak,
        peak_epoch=peak_epoch,
        train_acc_final=train_acc,
        epochs_run=global_epoch,
        train_seconds=train_seconds,
        eval_seconds=eval_seconds,
        images_per_second=images / max(train_seconds, 1e-9),
        rollbacks=rollbacks,
        curve=curve,
        extra=stack.report(),
    )


def _loss_fn(cfg: TrainConfig):
    def loss_fn(logits, target):
        return torch.nn.functional.cross_entropy(logits, target, label_smoothing=cfg.label_smoothing)

    return loss_fn


def sgd(groups, dev: "torch.device", *, lr: float, momentum: float, weight_decay: float, nesterov: bool = False):
    """SGD with momentum and weight decay, as the reference code; the fused kernel where torch
    has one for the device (one kernel over all parameters: the step costs about a third of
    the per-parameter loop's on CPU), the standard implementation otherwise. Same update rule."""
    kw = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
    if dev.type in ("cpu", "cuda"):
        try:
            return torch.optim.SGD(groups, fused=True, **kw)
        except (RuntimeError, TypeError, ValueError):  # torch without a fused SGD for this device
            pass
    return torch.optim.SGD(groups, **kw)


def _predictions(step_logits: list, sizes: list[int], dev) -> "torch.Tensor":
    """The epoch's predicted classes; a step that reported no logits predicts -1 (counts wrong)."""
    if all(lg is not None for lg in step_logits):
        return torch.cat(step_logits).argmax(1)
    return torch.cat(
        [lg.argmax(1) if lg is not None else torch.full((k,), -1, device=dev) for lg, k in zip(step_logits, sizes)]
    )


def _snapshot(model, opt) -> dict:
    return {"model": copy.deepcopy(model.state_dict()), "opt": copy.deepcopy(opt.state_dict())}


def _restore(model, opt, ckpt: dict) -> None:
    """Restore model and optimizer state, keeping the defense-controlled ``lr_mult`` values."""
    mults = [grp["lr_mult"] for grp in opt.param_groups]
    model.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["opt"])
    for grp, m in zip(opt.param_groups, mults):
        grp["lr_mult"] = m
