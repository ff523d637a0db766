"""UEraser on real CIFAR-10: the K views, the per-sample max loss, the K → 1 schedule, and
recovery of clean accuracy from an error-minimizing (EM) poison."""
from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F

from bench.attack import AttackContext
from bench.data import stratified_indices
from bench.defense import DefenseStack
from bench.models import create_model
from bench.perturbation import apply_perturbation
from bench.train_config import TrainConfig
from bench.trainer import fit
from registry import ATTACKS, DEFENSES

pytestmark = pytest.mark.usefixtures("one_thread")


def ce(logits, y):
    return F.cross_entropy(logits, y)


@pytest.fixture(scope="module")
def batch(mini):
    idx = stratified_indices(mini.train.y, 64, 1)
    return mini.train.x[idx].float() / 255, mini.train.y[idx]


def test_presets_follow_apbench_repeat_epoch():
    params = {n: DEFENSES.validate(n) for n in ("ueraser-lite", "ueraser", "ueraser-max")}
    assert [p.adversarial_epochs for p in params.values()] == [0, 50, None]
    assert all(p.repeats == 5 and p.views == "separate" and p.trivial_augment == "kornia" for p in params.values())
    p = params["ueraser"]
    assert (p.brightness_p, p.contrast_p, p.shuffle_p) == (0.5, 0.5, 0.5)
    assert (p.brightness_roughness, p.brightness_intensity, p.contrast_roughness) == ((0.3, 0.7), (0.5, 1.0), (0.3, 0.7))
    assert [DEFENSES.create(n).cost for n in params] == [1.0, 5.0, 5.0]
    assert DEFENSES.create("ueraser", repeats=3).cost == 3.0


def test_the_k_views_differ_from_each_other_and_from_the_input(batch):
    x, _ = batch
    d = DEFENSES.create("ueraser")
    torch.manual_seed(0)
    views = d.views_of(x, 5).view(5, *x.shape)
    assert views.shape == (5, *x.shape) and float(views.min()) >= 0 and float(views.max()) <= 1
    assert torch.equal(x, batch[0])  # the input batch is not modified in place
    per_image = lambda a, b: (a - b).abs().flatten(1).mean(1)
    for i in range(5):
        assert float(per_image(views[i], x).mean()) > 0.03  # a view is far from the input on average…
        assert (per_image(views[i], x) > 1e-3).float().mean() > 0.9  # … and nearly every image changed
        for j in range(i):
            assert (per_image(views[i], views[j]) > 1e-3).float().mean() > 0.9, (i, j)
    # batched views (one call on the K-tiled batch) are also distinct copies
    b = DEFENSES.create("ueraser", views="batched").views_of(x, 5).view(5, *x.shape)
    assert (per_image(b[0], b[1]) > 1e-3).float().mean() > 0.9


@pytest.mark.parametrize("trivial_augment,jpeg_quality", [("torchvision", None), ("none", 10), ("kornia", 10)])
def test_the_chain_variants_run_on_float_batches(batch, trivial_augment, jpeg_quality):
    x, _ = batch
    d = DEFENSES.create("ueraser", trivial_augment=trivial_augment, jpeg_quality=jpeg_quality)
    torch.manual_seed(0)
    out = d.chain(x)
    assert out.shape == x.shape and out.dtype == x.dtype and float(out.min()) >= 0 and float(out.max()) <= 1
    assert float((out - x).abs().mean()) > 0.01
    if jpeg_quality is not None:  # the JPEG round trip is the last step: the output sits on uint8 levels
        assert torch.allclose(out * 255, (out * 255).round(), atol=1e-4)
    else:
        assert not torch.allclose(out * 255, (out * 255).round(), atol=1e-4)


@pytest.mark.parametrize("views", ["separate", "batched"])
def test_the_loss_is_the_per_sample_max_over_the_views(batch, views):
    x, y = batch
    d = DEFENSES.create("ueraser", views=views)
    torch.manual_seed(0)
    model = create_model("convnet_cifar", num_classes=10, width=8).train()
    twin = copy.deepcopy(model)  # same weights; in train mode BatchNorm uses batch statistics
    torch.manual_seed(11)
    loss, logits = d.training_step(model, x, y, ce)
    assert loss.requires_grad and logits.shape == (64, 10)
    # direct computation: the same augmentation draws, the loss of every view, max per image
    torch.manual_seed(11)
    xs = d.views_of(x, 5).view(5, *x.shape)
    with torch.no_grad():
        if views == "batched":
            per = F.cross_entropy(twin(xs.flatten(0, 1)), y.repeat(5), reduction="none").view(5, 64)
        else:
            per = torch.stack([F.cross_entropy(twin(v), y, reduction="none") for v in xs])
    assert torch.allclose(loss.detach(), per.max(0).values.mean(), atol=1e-5)
    # not the mean over views, nor a single view's loss
    value = float(loss.detach())
    assert value > float(per.mean()) + 1e-3 and all(value > float(p.mean()) + 1e-3 for p in per)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_the_schedule_switches_to_one_view_after_the_adversarial_epochs(mini):
    tr = mini.train.subset(stratified_indices(mini.train.y, 200, 0))
    te = mini.test.subset(torch.arange(0, 500, 10))
    calls: list[int] = []
    torch.manual_seed(0)
    model = create_model("convnet_cifar", num_classes=10, width=4)
    model.register_forward_hook(lambda *a: calls.append(1))
    per_epoch: list[int] = []
    tick = lambda done, total, **kw: per_epoch.append(len(calls) - sum(per_epoch))
    cfg = TrainConfig(epochs=4, batch_size=100, lr=0.05, eval_every=100)
    stack = DefenseStack.build([("ueraser", {"adversarial_epochs": 2})])
    res = fit(model, tr, te, cfg, stack, seed=0, progress=tick)
    # 2 steps per epoch: 5 forward passes each in epochs 0-1, then 1 (the last epoch adds the evaluation)
    assert per_epoch == [10, 10, 2, 2 + 1]
    r = res.extra["ueraser"]
    assert (r["adversarial"]["epochs"], r["single"]["epochs"]) == (2, 2)
    assert (r["adversarial"]["steps"], r["single"]["steps"]) == (4, 4)
    assert r["passes_per_step"] == 3.0  # (2·2·5 + 2·2·1) / 8
    assert r["adversarial"]["seconds_per_step"] > r["single"]["seconds_per_step"] > 0
    assert r["adversarial"]["augment_seconds_per_step"] > r["single"]["augment_seconds_per_step"] > 0
    json.dumps(res.extra)
    # ueraser-lite never takes the max; ueraser-max always does
    for name, passes in (("ueraser-lite", 1.0), ("ueraser-max", 5.0)):
        torch.manual_seed(0)
        model = create_model("convnet_cifar", num_classes=10, width=4)
        res = fit(model, tr, te, cfg.model_copy(update={"epochs": 1}), DefenseStack.build([(name, {})]), seed=0)
        assert res.extra["ueraser"]["passes_per_step"] == passes, name


# --------------------------------------------------------------------------- EM poison
#: EM at a CPU scale where the poison works and UEraser's recovery is clear: 500 training
#: images (50 per class), a width-8 convnet as source and exploiter, 12 epochs of batch 32.
#: Measured when written (seeds 0 / 1 / 2): clean 35.4 / 35.8 / 36.2 %, EM + standard
#: training 16.6 / 16.6 / 20.8 %, EM + UEraser (2 adversarial epochs, then one view)
#: 26.6 / 27.4 / 29.6 %.
EXPLOITER = TrainConfig(epochs=12, batch_size=32, lr=0.05, eval_every=12)
UERASER = {"adversarial_epochs": 2}


@pytest.fixture(scope="module")
def em_slice(mini):
    train = mini.train.subset(stratified_indices(mini.train.y, 500, 0))
    atk = ATTACKS.create("em-sample", source_arch="convnet_cifar", source_model_kwargs={"width": 8}, batch_size=128, pgd_steps=5, step_size=2, max_rounds=30)
    pert = atk.generate(train, AttackContext(torch.device("cpu"), 0, 10, (3, 32, 32)))
    return train, pert, apply_perturbation(train, pert), mini.test


def exploit(train, test, specs, seed=0) -> float:
    torch.manual_seed(seed)
    model = create_model("convnet_cifar", num_classes=10, width=8)
    return fit(model, train, test, EXPLOITER, DefenseStack.build(specs), seed=seed).clean_acc_final


@pytest.fixture(scope="module")
def standard_on_em(em_slice):
    clean, _, poisoned, test = em_slice
    return exploit(clean, test, []), exploit(poisoned, test, [])


def test_the_em_poison_of_the_slice_converges(em_slice):
    clean, pert, poisoned, _ = em_slice
    assert pert.stats["converged"] and pert.stats["rounds"] < 30
    assert 0 < (poisoned.x.int() - clean.x.int()).abs().max() <= 8


def test_em_poison_makes_the_slice_unlearnable_for_standard_training(standard_on_em):
    clean_acc, em_acc = standard_on_em
    assert clean_acc > 0.3 and em_acc < clean_acc - 0.12, (clean_acc, em_acc)


def test_ueraser_recovers_clean_accuracy_on_the_em_slice(em_slice, standard_on_em):
    _, _, poisoned, test = em_slice
    clean_acc, em_acc = standard_on_em
    ueraser_acc = exploit(poisoned, test, [("ueraser", UERASER)])
    assert ueraser_acc > em_acc + 0.06, (clean_acc, em_acc, ueraser_acc)
