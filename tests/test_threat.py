"""Publishing a perturbation (signed / rectified, ratio) and the threat-model validator."""
from __future__ import annotations

import math

import pytest
import torch

from bench.data import ImageData
from bench.perturbation import ApplyConfig, Perturbation, apply_perturbation
from bench.threat import ThreatModel, ThreatModelError, measure, validate_poison
from registry import ATTACKS


@pytest.fixture(scope="module")
def clean(mini):
    return mini.train.subset(torch.arange(0, 2000, 10))  # 200 real images, all classes


def test_random_attack_publishes_within_budget(clean):
    atk = ATTACKS.create("random", epsilon=8)
    from bench.attack import AttackContext

    ctx = AttackContext(torch.device("cpu"), seed=0, num_classes=10, img_shape=(3, 32, 32))
    pert = atk.generate(clean, ctx)
    pub = apply_perturbation(clean, pert)
    stats = validate_poison("random", ATTACKS.get("random").meta["threat"], atk.params, clean, pub)
    assert stats.linf == 8.0  # U[-8, 8] rounds to ±8 somewhere in 600k values
    assert stats.changed == len(clean)
    assert 30 < stats.psnr < 40


def test_class_wise_delta_is_shared_by_a_class(clean):
    atk = ATTACKS.create("random", mode="class", epsilon=8)
    from bench.attack import AttackContext

    pert = atk.generate(clean, AttackContext(torch.device("cpu"), 0, 10, (3, 32, 32)))
    assert pert.delta.shape == (10, 3, 32, 32)
    d = pert.per_sample(clean.y)
    for k in range(10):
        assert torch.equal(d[clean.y == k][0], d[clean.y == k][-1])


def test_validator_catches_an_epsilon_breach(clean):
    """A perturbation of 12/255 under a declared 8/255 budget fails with the measured value."""
    delta = torch.full((10, 3, 32, 32), 12 / 255)
    pub = apply_perturbation(clean, Perturbation(delta, "class"))
    params = ATTACKS.validate("random", {"epsilon": 8})
    with pytest.raises(ThreatModelError) as err:
        validate_poison("evil", ThreatModel("linf", "epsilon"), params, clean, pub)
    msg = str(err.value)
    assert "attack 'evil'" in msg and "linf=8/255" in msg and "measured 12" in msg


def test_validator_catches_label_and_shape_changes(clean):
    params = ATTACKS.validate("random", {})
    flipped = ImageData(clean.x.clone(), (clean.y + 1) % 10, clean.classes)
    with pytest.raises(ThreatModelError, match="200 labels were changed"):
        validate_poison("x", ThreatModel(), params, clean, flipped)
    cropped = ImageData(clean.x[:, :, :16].contiguous(), clean.y, clean.classes)
    with pytest.raises(ThreatModelError, match="shape"):
        validate_poison("x", ThreatModel(), params, clean, cropped)


def test_l0_and_l2_norms_are_measured(clean):
    pub = clean.x.clone()
    pub[:, :, 5, 7] = 255 - pub[:, :, 5, 7]  # one pixel position (3 channels) per image
    s = measure(clean.x, pub)
    assert s.l0 == 1.0
    assert s.l2 == pytest.approx(float(((pub.float() - clean.x.float()) / 255).flatten(1).norm(dim=1).max()))


def test_signed_and_rectified_differ_as_the_reference_code(clean):
    """signed = clip(x + δ) rounded; rectified = the EM code: max(δ, 0), then truncation (§1.5)."""
    g = torch.Generator().manual_seed(0)
    delta = (torch.rand(len(clean), 3, 32, 32, generator=g) * 2 - 1) * 8 / 255
    pert = Perturbation(delta, "sample")
    signed = apply_perturbation(clean, pert, ApplyConfig(mode="signed")).x.int()
    rect = apply_perturbation(clean, pert, ApplyConfig(mode="rectified")).x.int()
    x, d255 = clean.x.int(), delta * 255
    assert torch.equal(signed, (x + d255).clamp(0, 255).round().int())
    assert torch.equal(rect, (x + d255.clamp(min=0)).clamp(0, 255).floor().int())
    neg = delta < 0
    assert torch.equal(rect[neg], x[neg].clamp(max=255))  # negative noise vanishes
    assert (signed[neg] < x[neg]).any()
    assert (rect >= x).all()


def test_poison_ratio_mask_leaves_the_rest_clean(clean):
    delta = torch.full((10, 3, 32, 32), 4 / 255)
    mask = torch.zeros(len(clean), dtype=torch.bool)
    mask[::4] = True
    pub = apply_perturbation(clean, Perturbation(delta, "class"), mask=mask)
    assert torch.equal(pub.x[~mask], clean.x[~mask])
    assert (pub.x[mask] != clean.x[mask]).flatten(1).any(1).all()


# -- the filter norm (class-wise convolutions, CUDA) --------------------------------------------
class _FilterParams:
    blur, kernel_size = 0.3, 3


def test_the_filter_norm_describes_and_measures_its_kernels(clean):
    from bench.perturbation import FilterPerturbation
    from bench.threat import PoisonStats, check_kernels

    threat = ThreatModel("filter", "blur")
    assert threat.describe() == "filter (blur)" and threat.describe(_FilterParams()) == "filter=0.3"
    assert PoisonStats(0, 0, 0, math.inf, 0).of("filter") == math.inf  # unmeasured fails any budget
    with pytest.raises(ValueError, match="threat norm"):
        ThreatModel("blur", "blur")
    k = torch.zeros(10, 3, 3)
    k[:, 1, 1] = 1.0  # the identity filter: a filter "poison" that changes nothing
    assert check_kernels("x", threat, _FilterParams(), k) == 0.0
    pert = FilterPerturbation(k, normalize="clip")
    pub = apply_perturbation(clean, pert)
    assert torch.equal(pub.x, clean.x)
    stats = validate_poison("x", threat, _FilterParams(), clean, pub, pert=pert)
    assert stats.changed == 0 and stats.blur == 0.0
    k[:, 0, 0] = 0.3  # at the budget: allowed; just past it: not
    assert check_kernels("x", threat, _FilterParams(), k) == pytest.approx(0.3)
    k[4, 2, 2] = 0.31
    with pytest.raises(ThreatModelError, match=r"filter budget filter=0.3 breached: measured 0.31 \(off-peak tap of class 4\)"):
        check_kernels("x", threat, _FilterParams(), k)


def test_the_filter_norm_needs_the_declared_kernel_size(clean):
    from bench.perturbation import FilterPerturbation

    class NoSize:
        blur = 0.3

    k = torch.zeros(10, 3, 3)
    k[:, 1, 1] = 1.0
    pert = FilterPerturbation(k)
    with pytest.raises(ThreatModelError, match="needs the params field 'kernel_size'"):
        validate_poison("x", ThreatModel("filter", "blur"), NoSize(), clean, apply_perturbation(clean, pert), pert=pert)
