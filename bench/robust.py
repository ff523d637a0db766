"""Robust accuracy of a trained exploiter on the clean test set (Going Grayscale Table 7).

FGSM at 8/255 and PGD-20 at 8/255 with steps of 0.8/255 (≈ 0.003) from a uniform random
start, the settings of the EM code's (never called) ``evaluator.py::_pgd_whitebox``; both
come from the shared `bench.pgd`.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from bench.data import stratified_indices
from bench.pgd import PGD, fgsm, pgd
from bench.train_config import RobustEvalConfig
from registry.lazy import lazy_import

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_import("torch")


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
        walk = PGD(eps, step, cfg.pgd_steps, start="uniform")
        attacks["robust_acc_pgd20"] = lambda xb, yb: pgd(model, xb, yb, walk, generator=g)[0]
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
