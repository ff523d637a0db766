"""Robust error-minimizing noise (REM) on real CIFAR-10: the reference script's defaults, the
publish path, the noise step's gradient (EOT over crop + flip, the inner adversary's point
held fixed), the min-min-max loop, and the comparison with EM under adversarial training."""
from __future__ import annotations

import pytest
import torch
from publish_checks import assert_loud_copy_rejected, publish

from attacks.delta import RandomTransform
from attacks.rem import NoiseStep, RobustErrorMinimizing, _UnderAttack
from attacks.source import frozen
from bench.attack import AttackContext, threat_of
from bench.data import Splits, stratified_indices
from bench.defense import DefenseStack
from bench.models import create_model
from bench.perturbation import apply_perturbation
from bench.pgd import PGD, pgd
from bench.train_config import TrainConfig
from bench.trainer import fit
from registry import ATTACKS

pytestmark = pytest.mark.usefixtures("one_thread")

F = torch.nn.functional
SMALL = {"width": 4}
#: REM at test scale: a width-4 convnet source, 8 steps of 100 images, 3 noise steps of 2/255,
#: 2 inner-adversary steps of 2/255 (ρ_a = 4/255), one EOT draw.
REM_SMALL = dict(
    source_arch="convnet_cifar", source_model_kwargs=SMALL, train_steps=8, batch_size=100, lr_decay_freq=4,
    pgd_steps=3, step_size=2, atk_steps=2, atk_step_size=2, eot_samples=1, report_freq=4,
)


def ctx_for(data, seed: int = 0) -> AttackContext:
    return AttackContext(torch.device("cpu"), seed, data.num_classes, tuple(data.x.shape[1:]))


# --------------------------------------------------------------------------- params
def test_defaults_are_the_reference_script():
    """``scripts/cifar10/gen_rem.sh``: ρ_u 8 (10 × 1.6, random start), ρ_a 4 (10 × 0.8, random
    start), 5 EOT draws of crop(32, 4) + flip, 5,000 steps of 128, SGD 0.1 ×0.1 every 2,000
    steps, momentum 0.9, wd 5e-4, ResNet-18."""
    p = ATTACKS.validate("rem", {})
    assert (p.epsilon, p.pgd_steps, p.step_size, p.random_start) == (8, 10, pytest.approx(1.6), True)
    assert (p.atk_epsilon, p.atk_steps, p.atk_step_size, p.atk_random_start) == (4, 10, pytest.approx(0.8), True)
    assert (p.eot_samples, p.augment, p.crop_padding) == (5, True, 4)
    assert (p.train_steps, p.batch_size, p.lr, p.lr_decay_rate, p.lr_decay_freq) == (5000, 128, 0.1, 0.1, 2000)
    assert (p.momentum, p.weight_decay, p.perturb_freq, p.quantize_noise, p.source_arch) == (0.9, 5e-4, 1, True, "resnet18_cifar")
    assert [p.lr_at(s) for s in (0, 1999, 2000, 4000, 4999)] == pytest.approx([0.1, 0.1, 0.01, 0.001, 0.001])
    assert ATTACKS.validate("rem", {"epsilon": 16, "atk_epsilon": 2}).step_size == pytest.approx(3.2)  # unset steps: radius / 5
    assert ATTACKS.validate("rem", {"epsilon": 16, "atk_epsilon": 2}).atk_step_size == pytest.approx(0.4)
    assert ATTACKS.get("rem").version == "1" and threat_of("rem").budget(p) == 8
    cpu = ATTACKS.validate("rem-cpu", {})
    assert (cpu.source_arch, cpu.source_model_kwargs) == ("convnet_cifar", {"width": 8})
    assert (cpu.train_steps, cpu.lr_decay_freq, cpu.pgd_steps, cpu.atk_steps, cpu.eot_samples) == (400, 160, 5, 3, 1)
    assert cpu.atk_steps * cpu.atk_step_size == pytest.approx(cpu.atk_epsilon) and cpu.pgd_steps * cpu.step_size == pytest.approx(cpu.epsilon)
    assert ATTACKS.validate("rem-cpu", {"source_arch": "mlp"}).source_model_kwargs == {}  # the width belongs to the convnet
    assert ATTACKS.get("rem-cpu").meta["preset_of"] == "rem"


# --------------------------------------------------------------------------- budget
CHEAP = dict(source_arch="mlp", train_steps=2, batch_size=100, pgd_steps=2, atk_steps=1, eot_samples=2)


@pytest.mark.parametrize("name", ["rem", "rem-cpu"])
def test_publish_path_keeps_the_budget_and_rejects_a_broken_attack(name):
    poison, clean, params = publish(name, CHEAP)
    assert poison.facts.threat == threat_of(name).describe(params) and poison.facts.linf == 8  # random start + 2 steps of 1.6 reach ε
    assert poison.facts.source_arch == "mlp" and torch.equal(poison.splits.train.y, clean.train.y)
    assert_loud_copy_rejected(name, RobustErrorMinimizing, params, clean)


# --------------------------------------------------------------------------- the noise step
def test_noise_gradient_is_eot_of_the_attacked_points_gradient(mini):
    """∇_p of the EOT loss = Σ_s T_sᵀ ∇CE at T_s(p) + η_s, with η_s the inner PGD's (fixed)
    offset: written out by hand with the same transform and start draws."""
    torch.manual_seed(0)
    model = create_model("convnet_cifar", num_classes=10, **SMALL)
    x, y = mini.train.x[:12].float() / 255, mini.train.y[:12]
    inner = PGD(4 / 255, 2 / 255, 2, start="uniform")
    with frozen(model):
        seen = _UnderAttack(model, y, RandomTransform("crop", 4, True, torch.Generator().manual_seed(5)), inner, 3, torch.Generator().manual_seed(6))
        p = x.clone().requires_grad_(True)
        (ours,) = torch.autograd.grad(F.cross_entropy(seen(p), y.repeat(3)), p)

        t_g, a_g = torch.Generator().manual_seed(5), torch.Generator().manual_seed(6)
        replay = RandomTransform("crop", 4, True, t_g)
        total = torch.zeros_like(x)
        for _ in range(3):
            q = x.clone().requires_grad_(True)
            t = replay(q)
            x_adv, _ = pgd(model, t.detach(), y, inner, generator=a_g)
            adv = x_adv.clone().requires_grad_(True)
            (g_adv,) = torch.autograd.grad(F.cross_entropy(model(adv), y), adv)  # the code's gd at adv_x
            (g,) = torch.autograd.grad((t * g_adv).sum(), q)  # the code's (def_x * gd).sum().backward()
            total += g
    assert torch.allclose(ours * 3, total, atol=1e-6)  # ours is the mean over the 3 draws
    assert float(total.abs().sum()) > 0


def test_crop_is_a_crop_of_the_zero_padded_image(mini):
    x = mini.train.x[:32].float() / 255
    t = RandomTransform("crop", 4, True, torch.Generator().manual_seed(0))
    out = t(x)
    padded = F.pad(x, (4,) * 4)
    offsets = set()
    for i in range(32):  # each output is one of the 81 crops of its own padded image, maybe mirrored
        found = [(dy, dx, f) for dy in range(9) for dx in range(9) for f in (False, True)
                 if torch.equal((lambda c: c.flip(-1) if f else c)(padded[i, :, dy : dy + 32, dx : dx + 32]), out[i])]
        assert found, i
        offsets.add(found[0][:2])
    assert len(offsets) > 10  # offsets are drawn per image


# --------------------------------------------------------------------------- the loop
@pytest.fixture(scope="module")
def rem_run(mini):
    train = mini.train.subset(stratified_indices(mini.train.y, 200, 0))
    atk = ATTACKS.create("rem", **REM_SMALL)
    return train, atk, atk.generate(train, ctx_for(train))


def test_rem_loop_trains_the_source_and_regenerates_every_image(rem_run):
    train, atk, pert = rem_run
    d255 = pert.delta * 255
    assert pert.mode == "sample" and pert.delta.shape == train.x.shape
    assert torch.allclose(d255, d255.round(), atol=1e-4) and float(d255.abs().max()) <= 8 + 1e-4  # whole levels, as the code's int8
    assert bool((d255.flatten(1).abs().amax(1) > 0).all())  # the final pass regenerated every image
    s = pert.stats
    assert [h["step"] for h in s["history"]] == [4, 8] and [h["lr"] for h in s["history"]] == pytest.approx([0.1, 0.01])
    assert s["train_steps"] == 8 and s["seconds_per_step"] > 0 and s["regenerate_seconds"] > 0
    src = atk.source_model.eval()  # the source's fit with and without the noise, recomputed here
    with torch.no_grad():
        x = train.x.float() / 255
        hits = [float((src(xb).argmax(1) == train.y).float().mean()) for xb in (x, (x + pert.delta).clamp(0, 1))]
    assert [s["source_clean_acc"], s["source_poisoned_acc"]] == pytest.approx(hits, abs=1e-3)


def test_rem_noise_lowers_an_adversarially_trained_models_loss_under_attack(mini):
    """The inner min-max of REM on a source trained with PGD AT: after a PGD-10 attack of radius
    ρ_a, the loss on x + δ_REM stays far below that on x + random noise of the same budget
    (measured on seeds 0 / 1: 2.087 / 2.045 vs 2.282 / 2.225). At this scale the EM-like noise
    (no inner adversary) does as well under attack (2.087 / 2.045; a width-16 AT source on
    2,000 images: 1.330 vs 1.329): AT makes the loss smooth over the ρ_a-ball, so the descent
    direction at the attacked point is nearly the clean one (δ's signs still differ in 8-17 %)."""
    train = mini.train.subset(stratified_indices(mini.train.y, 500, 0))
    torch.manual_seed(0)
    model = create_model("convnet_cifar", num_classes=10, **SMALL)
    stack = DefenseStack.build([("at", {"epsilon": 4, "step_size": 2, "steps": 2, "start": "uniform"})])
    fit(model, train, mini.test, TrainConfig(epochs=6, batch_size=64, lr=0.05, eval_every=6), stack=stack, seed=0)
    sub = train.subset(stratified_indices(train.y, 200, 1))
    x, y = sub.x.float() / 255, sub.y
    p = ATTACKS.validate("rem", {"pgd_steps": 5, "atk_steps": 3, "eot_samples": 2})
    rem = NoiseStep(p, torch.Generator().manual_seed(5), torch.Generator().manual_seed(6))(model, x, y)
    assert torch.allclose(rem * 255, (rem * 255).round(), atol=1e-4) and float(rem.abs().max()) * 255 <= 8 + 1e-4
    rand = ((torch.rand(x.shape, generator=torch.Generator().manual_seed(1)) * 2 - 1) * 8).round() / 255
    robust = {}
    with frozen(model):
        for name, d in (("clean", torch.zeros_like(x)), ("random", rand), ("rem", rem)):
            x_adv, _ = pgd(model, (x + d).clamp(0, 1), y, PGD(4 / 255, 1 / 255, 10, start="uniform"), generator=torch.Generator().manual_seed(0))
            with torch.no_grad():
                robust[name] = float(F.cross_entropy(model(x_adv), y))
    assert robust["rem"] < robust["random"] - 0.1, robust
    assert robust["rem"] < robust["clean"] - 0.1, robust


# --------------------------------------------------------------------------- against AT
EXPLOITER = TrainConfig(epochs=8, batch_size=64, lr=0.05, eval_every=8)
AT = [("at", {"epsilon": 4, "step_size": 1.5, "steps": 3, "start": "uniform"})]


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    reason="does not hold at CPU scale (measured): this test's run gives AT accuracy 0.280 on REM vs 0.242 on EM (500 "
    "images, width-4 convnets). Longer runs, wider sources and more images do not change it: rem-cpu on 2,000 images "
    "gives 0.500 vs EM 0.450 (clean 0.426); on 5,000 images at the reference's 13 epochs, REM from a width-8 / width-16 "
    "source leaves AT 4/255 at 0.536 / 0.551 vs EM 0.491 (clean 0.504), and a source trained 40 epochs at 0.568 vs "
    "EM 0.499 (clean 0.498) - docs/algorithms/pgd_attacks.md, 'Measured at CPU and test scale'",
)
def test_rem_survives_adversarial_training_better_than_em(mini):
    """REM's claim: an AT exploiter (ρ = 4/255) learns less from REM noise than from EM noise."""
    data = Splits("cifar10-mini", mini.train.subset(stratified_indices(mini.train.y, 500, 0)), mini.test)
    ctx = ctx_for(data.train)
    rem = ATTACKS.create("rem", **{**REM_SMALL, "train_steps": 30, "batch_size": 128, "lr_decay_freq": 10_000}).generate(data.train, ctx)
    em = ATTACKS.create(
        "em-sample", source_arch="convnet_cifar", source_model_kwargs=SMALL, batch_size=128, pgd_steps=5, step_size=2, max_rounds=12
    ).generate(data.train, ctx)

    def adversarially_trained(pert) -> float:
        torch.manual_seed(0)
        model = create_model("convnet_cifar", num_classes=10, **SMALL)
        return fit(model, apply_perturbation(data.train, pert), data.test, EXPLOITER, stack=DefenseStack.build(AT), seed=0).clean_acc_final

    acc_rem, acc_em = adversarially_trained(rem), adversarially_trained(em)
    assert acc_rem < acc_em - 0.03, (acc_rem, acc_em)
