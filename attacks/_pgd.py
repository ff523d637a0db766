"""Signed-gradient PGD on the perturbation, as the EM reference code runs it (algorithms.md
§1.2, §1.3, §2.1). Descent gives error-minimizing noise, ascent error-maximizing noise.

One call perturbs one batch with the model frozen; the caller owns the loop over the data.
The projection keeps the code's order: step p, η = clip(p − x, −ε, ε), p = clip(x + η, 0, 1),
and the returned η is *not* re-clipped to keep x + η inside [0, 1] (the harness clips when
it publishes).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from attacks._inputs import gray3, luma
from registry.lazy import lazy_import

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_import("torch")


@dataclass(frozen=True)
class PGDStep:
    """How one PGD pass moves δ. ``epsilon``/``step_size`` are on the [0, 1] scale.

    ``gray``: the model sees Gray3(clip(x + δ)) and δ is kept equal across channels; its step is
    Σ_c sign(∂L/∂p_c) (``sum_of_signs``, the Going Grayscale code: up to 3α per step) or
    sign(Σ_c ∂L/∂p_c) (``sign_of_sum``: α per step).
    """

    steps: int
    step_size: float
    epsilon: float
    direction: Literal[-1, 1] = -1  # -1 minimizes the loss (EM), +1 maximizes it (error-max)
    gray: bool = False
    gray_step: Literal["sum_of_signs", "sign_of_sum"] = "sum_of_signs"
    amp: bool = False
    channels_last: bool = False


def pgd(model: "torch.nn.Module", x: "torch.Tensor", delta: "torch.Tensor", y: "torch.Tensor", cfg: PGDStep) -> "torch.Tensor":
    """η after ``cfg.steps`` signed steps from ``delta`` for the clean float batch ``x``.

    ``model`` must be in eval mode with frozen parameters (see `frozen`).
    """
    from bench.trainer import autocast_for

    dev = x.device
    p = (x + delta).clamp(0.0, 1.0)
    eta = delta
    for _ in range(cfg.steps):
        p = p.detach().requires_grad_(True)
        inp = gray3(p) if cfg.gray else p
        if cfg.channels_last:
            inp = inp.contiguous(memory_format=torch.channels_last)
        with autocast_for(dev, cfg.amp):
            loss = torch.nn.functional.cross_entropy(model(inp).float(), y)
        (grad,) = torch.autograd.grad(loss, p)
        if cfg.gray and cfg.gray_step == "sum_of_signs":
            move = grad.sign().sum(dim=1, keepdim=True)
        elif cfg.gray:
            move = grad.sum(dim=1, keepdim=True).sign()
        else:
            move = grad.sign()
        p = p.detach() + cfg.direction * cfg.step_size * move
        eta = (p - x).clamp(-cfg.epsilon, cfg.epsilon)
        if cfg.gray:
            eta = luma(eta).expand_as(x)
        p = (x + eta).clamp(0.0, 1.0)
    return eta.detach()


def class_mean_update(delta: "torch.Tensor", eta: "torch.Tensor", y: "torch.Tensor", epsilon: float) -> None:
    """Class-wise EM's update (§1.3): for every class present in the batch, δ_k ← clip(mean of
    the batch's class-k η, −ε, ε). A running replacement by the mean, in place, no class loop."""
    k = delta.shape[0]
    sums = torch.zeros_like(delta).index_add_(0, y, eta.to(delta.dtype))
    counts = torch.bincount(y, minlength=k)
    present = counts > 0
    means = sums[present] / counts[present].view(-1, 1, 1, 1).to(delta.dtype)
    delta[present] = means.clamp(-epsilon, epsilon)


class frozen:
    """Context: the model in eval mode with ``requires_grad`` off, so PGD computes only the
    input gradient; restores both on exit."""

    def __init__(self, model: "torch.nn.Module"):
        self.model = model

    def __enter__(self) -> "torch.nn.Module":
        self._training = self.model.training
        self._grads = [p.requires_grad for p in self.model.parameters()]
        self.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        return self.model

    def __exit__(self, *exc) -> None:
        for p, g in zip(self.model.parameters(), self._grads):
            p.requires_grad_(g)
        self.model.train(self._training)
