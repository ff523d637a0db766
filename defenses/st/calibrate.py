"""Pick ST's τ and β the way the paper does: by accuracy on 20 clean images (Dang et al. §IV-C4).

The paper's values of τ and β were lost, and τ depends on the ACM formula, the embedding,
the architecture and the data. The paper reports that 20 clean images are enough to choose
both (it took them from the test set; uebench takes them from a clean holdout withheld from
the training pool, so the test set stays unseen); `calibrate` trains one ST exploiter per (τ, β) pair of a grid on the
(poisoned) training set and keeps the pair whose model scores best on those images. It
costs one training run per pair, so use it at the scale the numbers will be reported at.

    splits = load_dataset(DatasetSpec(name="cifar10", n_train=5000, holdout=20), root)   # bench.poison.load_dataset
    val = splits.holdout
    best = calibrate(lambda: create_model("resnet18_cifar", num_classes=10), poisoned_train, val,
                     TrainConfig(epochs=60), taus=[1.5, 2, 3], betas=[0.25, 0.5])
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from bench.defense import DefenseStack
from bench.train_config import TrainConfig

if TYPE_CHECKING:
    import torch

    from bench.data import ImageData


def calibrate(
    make_model: Callable[[], "torch.nn.Module"],
    train: "ImageData",
    val: "ImageData",
    cfg: TrainConfig,
    taus: list[float],
    betas: list[float],
    variant: str = "st",
    seed: int = 0,
    **params,
) -> dict:
    """Grid-search τ × β for ``variant`` (st, st-cg, st-full); returns the best pair and every score.

    ``val`` is the small clean set (the paper: 20 clean images; in uebench the dataset's
    ``holdout``, never the test set); ST also picks the model it ends with on it. ``params``
    are further params of the variant. Ties keep the earlier pair of the grid (τ-major order).
    """
    import torch

    from bench.trainer import fit

    scores = []
    for tau in taus:
        for beta in betas:
            torch.manual_seed(seed)
            stack = DefenseStack.build([(variant, {**params, "tau": tau, "beta": beta})])
            res = fit(make_model(), train, val, cfg, stack, seed=seed, holdout=val)  # ST also picks its model on val
            report = res.extra["st"]
            scores.append({"tau": tau, "beta": beta, "val_acc": res.clean_acc_final, "crossings": report["crossings"]})
    best = max(scores, key=lambda s: s["val_acc"])  # max keeps the first of equal scores
    return {"tau": best["tau"], "beta": best["beta"], "val_acc": best["val_acc"], "scores": scores}
