"""Signed-gradient PGD in an L∞ ball: the one implementation behind error-minimizing noise
(descent on δ), error-maximizing noise and TAP (ascent on δ), adversarial training and robust
evaluation (ascent on x).

Every step moves the point p by ``step_size`` along the sign of the loss gradient (``+1``
raises the loss, ``-1`` lowers it), then projects: η = clip(p − x, −ε, ε), p = clip(x + η,
0, 1). That is the EM reference code's order, and for adversarial examples the same point as
projecting p into the ε-ball and then into [0, 1]. `pgd` returns both the final point and η;
η is *not* re-clipped so that x + η stays in [0, 1] (the EM code stores it like that; the
harness clips when it publishes).

``gray`` is Going Grayscale's variant: the model sees Gray3(p), η is kept equal across
channels (its luminance, replicated), and the step is Σ_c sign(∂L/∂p_c) (``sum_of_signs``,
the released code: up to 3α per step) or sign(Σ_c ∂L/∂p_c) (``sign_of_sum``: α per step).

The gradient is taken with respect to the input only (``torch.autograd.grad``), so PGD never
touches the parameters' ``.grad``; the caller chooses the model's mode (eval for EM and for
evaluation; adversarial training crafts in eval mode as ``madrys.py`` does).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from bench.color import gray3, luma
from bench.device import autocast_for
from registry.lazy import lazy_import

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_import("torch")

Start = Literal["none", "uniform", "gaussian"]


@dataclass(frozen=True)
class PGD:
    """One PGD run. ``epsilon`` and ``step_size`` are on the [0, 1] scale.

    ``start`` (used when no starting δ is given): ``none`` starts at x; ``uniform`` at
    x + U[−ε, ε]; ``gaussian`` at x + step·N(0, 1) (``madrys.py``); each start is projected
    like a step.
    """

    epsilon: float
    step_size: float
    steps: int
    direction: Literal[1, -1] = 1
    start: Start = "none"
    gray: bool = False
    gray_step: Literal["sum_of_signs", "sign_of_sum"] = "sum_of_signs"
    amp: bool = False
    channels_last: bool = False


def pgd(
    model: "torch.nn.Module",
    x: "torch.Tensor",
    y: "torch.Tensor",
    cfg: PGD,
    delta: "torch.Tensor | None" = None,
    loss_fn: Callable | None = None,
    generator: "torch.Generator | None" = None,
) -> tuple["torch.Tensor", "torch.Tensor"]:
    """(x_adv, η) after ``cfg.steps`` steps from x + ``delta`` (or from ``cfg.start``).

    ``x`` is a float batch in [0, 1]; ``y`` hard labels or soft (B, K) targets; ``loss_fn``
    defaults to cross-entropy (a targeted attack passes the loss towards its targets).
    """
    loss_fn = loss_fn or torch.nn.functional.cross_entropy
    x = x.detach()
    eps = cfg.epsilon
    if delta is not None:
        eta = delta.detach()
        p = (x + eta).clamp(0.0, 1.0)
    else:
        if cfg.start == "uniform":
            p = x + eps * (torch.rand(x.shape, device=x.device, generator=generator) * 2 - 1)
        elif cfg.start == "gaussian":
            p = x + cfg.step_size * torch.randn(x.shape, device=x.device, generator=generator)
        else:
            p = x
        eta = (p - x).clamp(-eps, eps)
        p = (x + eta).clamp(0.0, 1.0)
    for _ in range(cfg.steps):
        p = p.detach().requires_grad_(True)
        with torch.enable_grad():
            inp = gray3(p) if cfg.gray else p
            if cfg.channels_last:
                inp = inp.contiguous(memory_format=torch.channels_last)
            with autocast_for(x.device, cfg.amp):
                loss = loss_fn(model(inp).float(), y)
            (grad,) = torch.autograd.grad(loss, p)
        if cfg.gray and cfg.gray_step == "sum_of_signs":
            move = grad.sign().sum(dim=1, keepdim=True)
        elif cfg.gray:
            move = grad.sum(dim=1, keepdim=True).sign()
        else:
            move = grad.sign()
        p = p.detach() + cfg.direction * cfg.step_size * move
        eta = (p - x).clamp(-eps, eps)
        if cfg.gray:
            eta = luma(eta).expand_as(x)
        p = (x + eta).clamp(0.0, 1.0)
    return p.detach(), eta.detach()


def fgsm(model, x, y, epsilon: float, loss_fn: Callable | None = None) -> "torch.Tensor":
    """One signed-gradient step of size ε from ``x`` (Goodfellow et al.)."""
    return pgd(model, x, y, PGD(epsilon, epsilon, 1), loss_fn=loss_fn)[0]
