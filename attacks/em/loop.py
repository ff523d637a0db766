"""The min-min bi-level loop of error-minimizing noise (``docs/algorithms/em.md``).

Each round: M steps of the source model on x + δ (SGD at a constant lr, grad-norm clip),
then one PGD descent pass on δ with the model frozen, then the stop test (source accuracy on
the poisoned set). Rounds repeat until the error falls below λ or ``max_rounds`` is reached.
Sample-wise and class-wise EM differ only in where δ comes from (δᵢ vs δ_{yᵢ}), how the
model batches are drawn (fixed order vs reshuffled), which images PGD and the stop test see
(all vs a stratified subset) and how a PGD result is stored (per image vs class mean).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from attacks.delta import pgd_pass
from attacks.source import frozen
from attacks.views import BatchStream, CleanView, fixed_batches
from bench.color import gray3
from bench.pgd import PGD
from registry.lazy import lazy_import

if TYPE_CHECKING:
    import torch

    from attacks.em.params import EMParams
    from bench.attack import AttackContext
    from bench.data import ImageData
else:
    torch = lazy_import("torch")


@dataclass
class MinMinResult:
    delta: "torch.Tensor"
    model: "torch.nn.Module"
    stats: dict


class _Source:
    """The source model plus its generation-time optimizer (constant lr: the reference code
    builds a scheduler but never steps it while generating)."""

    def __init__(self, p: "EMParams", ctx: "AttackContext"):
        self.p, self.ctx = p, ctx
        self.channels_last = p.use_channels_last(ctx.device)
        self.reset()

    def reset(self) -> None:
        from bench.trainer import sgd

        self.model = self.p.build_source(self.ctx)
        params = list(self.model.parameters())
        self.opt = sgd(params, params[0].device, lr=self.p.lr, momentum=self.p.momentum, weight_decay=self.p.weight_decay)

    def step(self, inp: "torch.Tensor", y: "torch.Tensor") -> None:
        from bench.device import autocast_for

        self.model.train()
        if self.channels_last:
            inp = inp.contiguous(memory_format=torch.channels_last)
        with autocast_for(inp.device, self.p.amp):
            loss = torch.nn.functional.cross_entropy(self.model(inp).float(), y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.p.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.p.grad_clip)
        self.opt.step()


def min_min(train: "ImageData", p: "EMParams", ctx: "AttackContext") -> MinMinResult:
    """Run EM on ``train``; δ is float32 on the [0, 1] scale, (N|K, C, H, W), on ``ctx.device``."""
    dev = ctx.device
    c = train.x.shape[1]
    if p.gray and c != 3:
        raise ValueError(f"gray: needs 3-channel images, the data has {c}; set gray: false")
    x = train.x.to(dev)
    y = train.y.to(dev)
    n, k = len(train), train.num_classes
    eps, alpha = p.epsilon / 255.0, p.step_size / 255.0
    class_wise = p.mode == "class"

    source = _Source(p, ctx)
    view = CleanView(x, p.augment, p.crop_padding, ctx.generator(1), source.channels_last)
    delta = _initial_delta((k if class_wise else n, *x.shape[1:]), p, eps, ctx)
    stream = BatchStream(n, p.batch_size, shuffle=class_wise, g=ctx.generator(2), device=dev)
    steps_per_round = p.train_steps * (stream.batches_per_pass() if p.train_unit == "epochs" else 1)
    pgd_index = p.pgd_index(y, k)
    walk = PGD(eps, alpha, p.pgd_steps, direction=-1, gray=p.gray, gray_step=p.gray_step, amp=p.amp, channels_last=source.channels_last)

    def delta_of(idx: "torch.Tensor") -> "torch.Tensor":
        return delta[y[idx]] if class_wise else delta[idx]

    def model_input(xb: "torch.Tensor", db: "torch.Tensor", gray: bool) -> "torch.Tensor":
        inp = (gray3(xb) if gray else xb) + db  # the code adds δ to the (gray) clean image …
        return inp.clamp(0.0, 1.0) if p.clip_in_train_step else inp  # … without clipping

    history: list[dict] = []
    acc, converged, rounds = 0.0, False, 0
    t_start = time.perf_counter()
    for rounds in range(1, p.max_rounds + 1):
        t0 = time.perf_counter()
        if p.reset_model_each_round and rounds > 1:
            source.reset()
        # (a) M model steps on x + δ
        for _ in range(steps_per_round):
            idx = next(stream)
            source.step(model_input(view.batch(idx), delta_of(idx), p.gray), y[idx])
        t1 = _clock(dev)
        # (b) one PGD descent pass over the (sub)set, in order, with the model frozen
        with frozen(source.model) as model:
            pgd_pass(model, view, pgd_index, y, delta, walk, class_wise, p.batch_size)
            t2 = _clock(dev)
            # (c) stop test: source accuracy on the poisoned (sub)set
            acc = _poisoned_accuracy(model, view, pgd_index, y, delta_of, model_input, p, source.channels_last)
        t3 = time.perf_counter()
        seconds = t3 - t0
        history.append({"round": rounds, "acc": round(acc, 4), "seconds": round(seconds, 2),
                        "model_s": round(t1 - t0, 3), "pgd_s": round(t2 - t1, 3), "stop_s": round(t3 - t2, 3)})
        ctx.log.info("em round %d/%d: source accuracy on poisoned data %.4f (%.1f s)", rounds, p.max_rounds, acc, seconds)
        ctx.progress(rounds, p.max_rounds, acc=acc)
        if 1.0 - acc < p.stop_error:
            converged = True
            break
    if not converged:
        ctx.log.warning(
            "em stopped at max_rounds=%d before the stop criterion (error %.4f >= stop_error %g)",
            p.max_rounds, 1.0 - acc, p.stop_error,
        )
    stats = {
        "rounds": rounds,
        "converged": converged,
        "final_acc": round(acc, 4),
        "stop_error": p.stop_error,
        "seconds": round(time.perf_counter() - t_start, 2),
        "history": history,
    }
    return MinMinResult(delta.detach(), source.model, stats)


def _clock(dev: "torch.device") -> float:
    """Wall time at which the device's queued work is done (phase timings on CUDA too)."""
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    return time.perf_counter()


def _initial_delta(shape: tuple, p: "EMParams", eps: float, ctx: "AttackContext") -> "torch.Tensor":
    """δ₀: zeros (code) or U[−ε, ε] (Going Grayscale Alg. 1), channel-equal when gray."""
    if p.init == "zeros":
        return torch.zeros(shape, device=ctx.device)
    n, c, h, w = shape
    u = torch.rand((n, 1 if p.gray else c, h, w), device=ctx.device, generator=ctx.generator(3))
    return ((u * 2 - 1) * eps).expand(shape).contiguous()


def _poisoned_accuracy(model, view, index, y, delta_of, model_input, p, channels_last: bool, chunk: int = 4096) -> float:
    """Stop test: the exploiter's `accuracy` of the frozen model on x + δ over ``index``, the
    input built like the model steps' (no clip by default, BatchNorm in eval mode); with
    ``gray``, colour or gray inputs per ``stop_test_gray`` (§2.1 item 4)."""
    from bench.trainer import accuracy

    correct = 0.0
    for b in fixed_batches(len(index), chunk, y.device):
        idx = index[b]
        inp = model_input(view.batch(idx), delta_of(idx), p.gray and p.stop_test_gray)
        if channels_last:
            inp = inp.contiguous(memory_format=torch.channels_last)
        correct += accuracy(model, inp, y[idx], batch_size=p.batch_size, amp=p.amp) * len(idx)
    return correct / max(1, len(index))
