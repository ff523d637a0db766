"""L∞ adversarial examples: the one PGD used by adversarial training and by robust accuracy.

`pgd_linf` is sign-gradient ascent on the loss inside the ε-ball around ``x`` and inside
[0, 1]. FGSM is its one-step case with the step equal to ε and no random start. The `at`
defense crafts its training examples with it (Gaussian start, as the EM code's madrys.py);
`evaluate_robust` measures FGSM and PGD-20 accuracy of a trained exploiter on the clean test
set (Going Grayscale Table 7; settings in algorithms.md §2.4: ε 8/255, 20 steps of 0.003 ≈
0.8/255, uniform random start, as the EM code's never-called ``evaluator.py::_pgd_whitebox``).

The gradient is taken with respect to the input only (``torch.autograd.grad``), so crafting
never touches the parameters' ``.grad``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Literal

from bench.data import stratified_indices
from bench.train_config import RobustEvalConfig
from registry.lazy import lazy_import

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_import("torch")

Start = Literal["none", "uniform", "gaussian"]


def pgd_linf(
    model: "torch.nn.Module",
    x: "torch.Tensor",
    y: "torch.Tensor",
    epsilon: float,
    step_size: float,
    steps: int,
    start: Start = "uniform",
    loss_fn: Callable | None = None,
    generator: "torch.Generator | None" = None,
) -> "torch.Tensor":
    """Adversarial versions of float images ``x`` in [0, 1] (ε and step on the [0, 1] scale).

    ``start``: ``none`` starts at ``x``; ``uniform`` at x + U[-ε, ε]; ``gaussian`` at
    x + step·N(0, 1) (madrys.py). The start is projected into the ε-ball and [0, 1] like every
    step (madrys.py takes its first gradient at the unclamped Gaussian start; within 4σ of a
    2/255 step the two agree). ``y`` may be hard labels or soft (B, K) targets. The caller
    chooses the model's mode (eval for evaluation; `at` follows madrys.py and uses eval).
    """
    loss_fn = loss_fn or torch.nn.functional.cross_entropy
    x = x.detach()
    if start == "uniform":
        noise = torch.rand(x.shape, device=x.device, generator=generator) * 2 - 1
        x_adv = x + epsilon * noise
    elif start == "gaussian":
        x_adv = x + step_size * torch.randn(x.shape, device=x.device, generator=generator)
    else:
        x_adv = x.clone()
    x_adv = _project(x_adv, x, epsilon)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        with torch.enable_grad():
            loss = loss_fn(model(x_adv), y)
            (grad,) = torch.autograd.grad(loss, [x_adv])
        x_adv = _project(x_adv.detach() + step_size * grad.sign(), x, epsilon)
    return x_adv.detach()


def _project(x_adv: "torch.Tensor", x: "torch.Tensor", epsilon: float) -> "torch.Tensor":
    return torch.minimum(torch.maximum(x_adv, x - epsilon), x + epsilon).clamp_(0.0, 1.0)


def fgsm(model, x, y, epsilon: float, loss_fn: Callable | None = None) -> "torch.Tensor":
    """One signed-gradient step of size ε from ``x`` (Goodfellow et al.)."""
    return pgd_linf(model, x, y, epsilon, epsilon, 1, "none", loss_fn)


def evaluate_robust(
    model: "torch.nn.Module",
    x_test: "torch.Tensor",
    y_test: "torch.Tensor",
    cfg: RobustEvalConfig,
    seed: int,
    batch_size: int = 250,
) -> dict:
    """FGSM and PGD accuracy (%) of ``model`` on uint8 test images (already transformed by the
    defense stack, e.g. grayed), on a stratified subset of ``cfg.n_test`` images (seeded).

    Keys: ``robust_acc_fgsm`` and ``robust_acc_pgd20`` (the PGD key keeps its name whatever
    ``cfg.pgd_steps`` is); a disabled attack's key is left out.
    """
    dev = next(model.parameters()).device
    y_test = y_test.to(x_test.device)
    if cfg.n_test is not None and cfg.n_test < len(x_test):
        idx = stratified_indices(y_test, cfg.n_test, seed).to(x_test.device)
        x_test, y_test = x_test[idx], y_test[idx]
    eps, step = cfg.epsilon / 255.0, cfg.pgd_step_size / 255.0
    g = torch.Generator(device=dev).manual_seed(seed)
    attacks: dict[str, Callable] = {}
    if cfg.fgsm:
        attacks["robust_acc_fgsm"] = lambda xb, yb: fgsm(model, xb, yb, eps)
    if cfg.pgd:
        attacks["robust_acc_pgd20"] = lambda xb, yb: pgd_linf(model, xb, yb, eps, step, cfg.pgd_steps, "uniform", generator=g)
    correct = {k: 0 for k in attacks}
    was_training = model.training
    model.eval()
    try:
        for s in range(0, len(x_test), batch_size):
            xb = x_test[s : s + batch_size].to(dev).float().div_(255.0)
            yb = y_test[s : s + batch_size].to(dev)
            for key, attack in attacks.items():
                x_adv = attack(xb, yb)
                with torch.no_grad():
                    correct[key] += int((model(x_adv).argmax(1) == yb).sum())
    finally:
        model.train(was_training)
    n = max(1, len(x_test))
    return {k: 100.0 * v / n for k, v in correct.items()}
