"""The baselines on real CIFAR-10: error-maximizing noise, OPS, LSP and random noise (§1.4, §4)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bench.attack import AttackContext, threat_of
from bench.data import stratified_indices
from bench.perturbation import apply_perturbation
from bench.threat import measure, validate_poison
from registry import ATTACKS


@pytest.fixture(scope="module")
def train500(mini):
    """500 real CIFAR-10 training images, 50 per class, in dataset order."""
    return mini.train.subset(stratified_indices(mini.train.y, 500, 0))


def ctx_for(data, seed: int = 0) -> AttackContext:
    return AttackContext(torch.device("cpu"), seed, data.num_classes, tuple(data.x.shape[1:]))


def source_loss(model, x_uint8, y) -> tuple[float, float]:
    model.eval()
    with torch.no_grad():
        logits = model(x_uint8.float() / 255)
    return float(torch.nn.functional.cross_entropy(logits, y)), float((logits.argmax(1) == y).float().mean())


# --------------------------------------------------------------------------- error-max
QUICK_SOURCE = {"epochs": 8, "lr": 0.02, "batch_size": 50, "augment": "none"}  # an MLP learns 500 images in seconds


def test_error_max_raises_the_source_loss(train500):
    """PGD ascent on a clean-trained source: the published images raise its loss and cut its accuracy."""
    params = dict(source_arch="mlp", source_train=QUICK_SOURCE, max_rounds=2, pgd_steps=5, step_size=2)
    atk = ATTACKS.create("error-max", **params)
    pert = atk.generate(train500, ctx_for(train500))
    assert pert.mode == "sample" and pert.delta.shape == train500.x.shape
    assert float(pert.delta.abs().max()) <= 8 / 255 + 1e-6
    pub = apply_perturbation(train500, pert)
    validate_poison("error-max", threat_of("error-max"), atk.params, train500, pub)
    loss_clean, acc_clean = source_loss(atk.source_model, train500.x, train500.y)
    loss_pois, acc_pois = source_loss(atk.source_model, pub.x, train500.y)
    assert acc_clean > 0.3  # the source did learn the clean data
    assert loss_pois > loss_clean + 0.15 and acc_pois < acc_clean / 2
    assert pert.stats["source_poisoned_loss"] > pert.stats["source_clean_loss"]
    assert 1 <= pert.stats["rounds"] <= 2 and len(pert.stats["history"]) == pert.stats["rounds"]


def test_error_max_class_wise_is_one_delta_per_class(train500):
    params = dict(mode="class", source_arch="mlp", source_train=QUICK_SOURCE, max_rounds=3)
    atk = ATTACKS.create("error-max", **params)
    assert atk.params.pgd_steps == 1 and atk.params.target_error == 0.8  # the class-wise script's defaults
    pert = atk.generate(train500, ctx_for(train500))
    assert pert.mode == "class" and pert.delta.shape == (10, 3, 32, 32)
    assert float(pert.delta.abs().max()) <= 8 / 255 + 1e-6 and float(pert.delta.abs().mean()) > 0
    pub = apply_perturbation(train500, pert)
    loss_clean, _ = source_loss(atk.source_model, train500.x, train500.y)
    loss_pois, _ = source_loss(atk.source_model, pub.x, train500.y)
    assert loss_pois > loss_clean


# --------------------------------------------------------------------------- OPS
def reference_ops_scores(xk: np.ndarray) -> np.ndarray:
    """The OPS search objective written out independently in numpy, (8, H, W) for class images
    ``xk`` (n, H, W, 3) in [0, 1]: mean/std over images and channels of |c − x| per position."""
    out = []
    for v in range(8):
        c = np.array([v // 4, (v // 2) % 2, v % 2], dtype=np.float64)
        d = np.abs(c - xk)  # (n, H, W, 3)
        out.append(d.mean(axis=(0, 3)) / d.std(axis=(0, 3)))
    return np.stack(out)


def test_ops_changes_exactly_one_pixel_per_image(train500):
    atk = ATTACKS.create("ops")
    pert = atk.generate(train500, ctx_for(train500))
    pub = apply_perturbation(train500, pert)
    stats = validate_poison("ops", threat_of("ops"), atk.params, train500, pub)
    assert stats.l0 == 1.0
    chosen = pert.stats["pixels"]
    assert [p["class"] for p in chosen] == list(range(10))
    assert len({(p["row"], p["col"], tuple(p["colour"])) for p in chosen}) == 10  # no pair reused

    changed = (pub.x != train500.x).any(dim=1)  # (N, H, W) changed positions
    row = torch.tensor([chosen[k]["row"] for k in range(10)])[train500.y]
    col = torch.tensor([chosen[k]["col"] for k in range(10)])[train500.y]
    allowed = torch.zeros_like(changed)
    allowed[torch.arange(len(pub.x)), row, col] = True
    assert not (changed & ~allowed).any()  # nothing else moves
    colour = torch.tensor([chosen[k]["colour"] for k in range(10)], dtype=torch.uint8)[train500.y] * 255
    assert torch.equal(pub.x[torch.arange(len(pub.x)), :, row, col], colour)  # the pixel is the corner colour
    assert changed.flatten(1).sum(1).float().mean() > 0.95  # all but the rare images already of that colour


def test_ops_picks_the_best_scoring_pixel(train500):
    """Class 0's pixel is the argmax of the OPS objective computed independently."""
    pert = ATTACKS.create("ops").generate(train500, ctx_for(train500))
    first = pert.stats["pixels"][0]
    xk = (train500.x[train500.y == 0].permute(0, 2, 3, 1).numpy() / 255.0).astype(np.float64)
    scores = reference_ops_scores(xk)
    v = 4 * first["colour"][0] + 2 * first["colour"][1] + first["colour"][2]
    assert scores[v, first["row"], first["col"]] == pytest.approx(scores.max(), rel=1e-5)


# --------------------------------------------------------------------------- LSP
def test_lsp_respects_its_l2_budget_and_is_class_separable(train500):
    atk = ATTACKS.create("lsp")
    assert atk.params.l2_budget == pytest.approx(6 / 255 * math.sqrt(3072), abs=1e-4)  # the code's ε = 6 default
    pert = atk.generate(train500, ctx_for(train500))
    assert pert.mode == "sample" and pert.delta.shape == train500.x.shape
    norms = pert.delta.flatten(1).norm(dim=1)
    assert torch.allclose(norms, torch.full_like(norms, atk.params.l2_budget), rtol=1e-5)
    # constant 8x8 patches: the image is its 4x4 grid blown up
    grid = pert.delta[:, :, ::8, ::8]
    assert torch.equal(pert.delta, grid.repeat_interleave(8, 2).repeat_interleave(8, 3))
    # linearly separable shortcut: every δ is nearest to its own class's mean
    g = grid.flatten(1)
    means = torch.stack([g[train500.y == k].mean(0) for k in range(10)])
    assert torch.equal(torch.cdist(g, means).argmin(1), train500.y)

    pub = apply_perturbation(train500, pert)
    stats = validate_poison("lsp", threat_of("lsp"), atk.params, train500, pub)
    l2 = ((pub.x.float() - train500.x.float()) / 255).flatten(1).norm(dim=1)
    assert stats.l2 <= atk.params.l2_budget + 0.5 / 255 * math.sqrt(3072)
    assert 0.9 * atk.params.l2_budget < float(l2.median()) < 1.05 * atk.params.l2_budget  # rounding and clipping only


def test_lsp_is_seeded(train500):
    a = ATTACKS.create("lsp").generate(train500, ctx_for(train500, seed=1)).delta
    b = ATTACKS.create("lsp").generate(train500, ctx_for(train500, seed=1)).delta
    c = ATTACKS.create("lsp").generate(train500, ctx_for(train500, seed=2)).delta
    assert torch.equal(a, b) and not torch.equal(a, c)


# --------------------------------------------------------------------------- random (§1.4)
@pytest.mark.parametrize("mode,rows", [("sample", 500), ("class", 10)])
def test_random_noise_is_uniform_in_the_ball(train500, mode, rows):
    pert = ATTACKS.create("random", mode=mode, epsilon=8).generate(train500, ctx_for(train500))
    assert pert.mode == mode and pert.delta.shape == (rows, 3, 32, 32)
    d = pert.delta * 255
    assert float(d.abs().max()) <= 8 + 1e-4
    assert abs(float(d.mean())) < 0.2 and float(d.abs().mean()) == pytest.approx(4, abs=0.2)  # U[-8, 8]
    pub = apply_perturbation(train500, pert)
    assert measure(train500.x, pub.x).linf == 8.0
