"""EM's variants on real CIFAR-10: class-wise δ, ULEO-Gray/-Augs/-GrayAugs, the MLP source, the presets."""
from __future__ import annotations

import pytest
import torch

from attacks.views import CleanView
from bench.attack import AttackContext
from bench.color import LUMA, gray3
from bench.data import stratified_indices
from bench.perturbation import apply_perturbation
from registry import ATTACKS

#: One cheap round on an MLP source: these tests check the structure of δ, not its strength.
ONE_ROUND = dict(source_arch="mlp", max_rounds=1, batch_size=100, lr=0.01, pgd_steps=3, step_size=2)


@pytest.fixture(scope="module")
def train200(mini):
    return mini.train.subset(stratified_indices(mini.train.y, 200, 1))


def ctx_for(data, seed: int = 0) -> AttackContext:
    return AttackContext(torch.device("cpu"), seed, data.num_classes, tuple(data.x.shape[1:]))


def test_presets_carry_the_papers_defaults():
    p = {name: ATTACKS.validate(name, {}) for name in ("em", "em-sample", "em-class", "uleo-gray", "uleo-augs", "uleo-grayaugs", "em-mlp")}
    assert (p["em-sample"].mode, p["em-sample"].pgd_steps, p["em-sample"].step_size) == ("sample", 20, 0.8)
    assert (p["em-class"].mode, p["em-class"].pgd_steps, p["em-class"].subset_fraction) == ("class", 1, 0.2)
    assert (p["uleo-gray"].gray, p["uleo-gray"].augment) == (True, False)
    assert (p["uleo-augs"].gray, p["uleo-augs"].augment) == (False, True)
    assert (p["uleo-grayaugs"].gray, p["uleo-grayaugs"].augment) == (True, True)
    assert p["em-mlp"].source_arch == "mlp" and p["em-mlp"].source_model_kwargs == {"sigmoid_output": True}
    for q in p.values():  # the code's choices wherever paper and code disagree
        assert (q.init, q.reset_model_each_round, q.clip_in_train_step, q.train_unit) == ("zeros", False, False, "batches")
        assert (q.epsilon, q.train_steps, q.stop_error, q.batch_size, q.lr, q.grad_clip) == (8, 10, 0.01, 512, 0.1, 5.0)
    assert p["em"].source_arch == "resnet18_cifar"
    # mode-dependent defaults follow the chosen mode and ε unless set
    q = ATTACKS.validate("em", {"mode": "class", "epsilon": 16})
    assert (q.pgd_steps, q.step_size) == (1, 1.6)
    assert ATTACKS.validate("em-class", {"pgd_steps": 5}).pgd_steps == 5


def test_bad_params_name_the_field():
    from registry import RegistryError

    with pytest.raises(RegistryError, match="attack 'em-sample': mode: Input should be 'sample' or 'class'"):
        ATTACKS.validate("em-sample", {"mode": "pixel"})
    with pytest.raises(RegistryError, match="pgd_step: unknown field"):
        ATTACKS.validate("uleo-grayaugs", {"pgd_step": 3})


def test_class_wise_delta_is_one_per_class(train200):
    atk = ATTACKS.create("em-class", **{**ONE_ROUND, "max_rounds": 2})
    pert = atk.generate(train200, ctx_for(train200))
    assert pert.mode == "class" and pert.delta.shape == (10, 3, 32, 32)
    assert float(pert.delta.abs().max()) <= 8 / 255 + 1e-6
    assert (pert.delta.flatten(1).abs().sum(1) > 0).all()  # every class got a δ from its subset images
    per_image = pert.per_sample(train200.y)
    for k in range(10):
        members = per_image[train200.y == k]
        assert torch.equal(members, members[:1].expand_as(members))
    pub = apply_perturbation(train200, pert)
    unclipped = ((train200.x.float() + per_image * 255) >= 0.5) & ((train200.x.float() + per_image * 255) <= 254.5)
    d = pub.x.float() - train200.x.float()
    assert (d - per_image * 255)[unclipped].abs().max() <= 0.5 + 1e-4  # each image of a class: its class δ, rounded
    assert pert.stats["rounds"] == len(pert.stats["history"]) >= 1


def test_grayaugs_delta_is_channel_equal(train200):
    atk = ATTACKS.create("uleo-grayaugs", **ONE_ROUND)
    pert = atk.generate(train200, ctx_for(train200))
    d = pert.delta
    assert float(d.abs().max()) > 0 and float(d.abs().max()) <= 8 / 255 + 1e-6
    assert torch.equal(d[:, 0], d[:, 1]) and torch.equal(d[:, 1], d[:, 2])
    # published on the colour original: the change is the same in R, G and B wherever nothing clips
    pub = apply_perturbation(train200, pert)
    diff = pub.x.int() - train200.x.int()
    inside = ((train200.x.int() + 8 <= 255) & (train200.x.int() - 8 >= 0)).all(dim=1)
    assert inside.float().mean() > 0.5
    for c in (1, 2):
        assert torch.equal(diff[:, 0][inside], diff[:, c][inside])
    assert not torch.equal(pub.x[:, 0], pub.x[:, 1])  # still colour images


def test_gray_and_augment_are_independent(train200):
    gray_only = ATTACKS.create("uleo-gray", **ONE_ROUND).generate(train200, ctx_for(train200)).delta
    aug_only = ATTACKS.create("uleo-augs", **ONE_ROUND).generate(train200, ctx_for(train200)).delta
    plain = ATTACKS.create("em-sample", **ONE_ROUND).generate(train200, ctx_for(train200)).delta
    assert torch.equal(gray_only[:, 0], gray_only[:, 2])  # gray ⇒ channel-equal, with or without augmentation
    assert not torch.equal(aug_only[:, 0], aug_only[:, 2])  # augmentation alone keeps colour noise
    assert not torch.equal(aug_only, plain)  # … and changes what PGD sees


def test_augmented_views_are_fresh_crops_of_the_clean_image(train200):
    x = train200.x[:16]
    view = CleanView(x, augment=True, padding=4, g=torch.Generator().manual_seed(0), channels_last=False)
    a, b = view.batch(torch.arange(16)), view.batch(torch.arange(16))
    assert a.dtype == torch.float32 and 0 <= float(a.min()) and float(a.max()) <= 1
    assert not torch.equal(a, b)  # a new crop/flip on every draw
    a = (a * 255).round().to(torch.uint8)
    padded = torch.nn.functional.pad(x, (4,) * 4)
    for i in range(16):
        wins = [padded[i, :, dy : dy + 32, dx : dx + 32] for dy in range(9) for dx in range(9)]
        assert any(torch.equal(a[i], w) or torch.equal(a[i], w.flip(-1)) for w in wins)
    plain = CleanView(x, augment=False, padding=4, g=torch.Generator(), channels_last=False)
    assert torch.equal((plain.batch(torch.arange(16)) * 255).round().to(torch.uint8), x)


def test_gray3_is_torchvision_luminance(train200):
    from torchvision.transforms.functional import rgb_to_grayscale

    x = train200.x[:8].float() / 255
    assert LUMA == (0.2989, 0.587, 0.114)
    assert torch.allclose(gray3(x), rgb_to_grayscale(x, num_output_channels=3), atol=1e-6)


def test_mlp_source_works(train200):
    """The Going Grayscale MLP (sigmoid outputs) as EM source: it trains on x + δ and δ lowers its loss."""
    atk = ATTACKS.create("em-mlp", **{**{k: v for k, v in ONE_ROUND.items() if k != "source_arch"}, "max_rounds": 2})
    pert = atk.generate(train200, ctx_for(train200))
    from bench.models import MLP

    assert isinstance(atk.source_model, MLP) and atk.source_model.sigmoid_output
    assert pert.stats["source_arch"] == "mlp"
    model = atk.source_model.eval()
    x = train200.x.float() / 255
    with torch.no_grad():
        clean = torch.nn.functional.cross_entropy(model(x), train200.y)
        poisoned = torch.nn.functional.cross_entropy(model((x + pert.delta).clamp(0, 1)), train200.y)
    assert poisoned < clean  # error-minimizing for its own source
    assert float(pert.delta.abs().max()) <= 8 / 255 + 1e-6


def test_uniform_init_and_reset_are_honoured(train200):
    """The papers' variants run: δ₀ ~ U[-ε, ε] and a fresh model each round."""
    atk = ATTACKS.create("em", **{**ONE_ROUND, "init": "uniform", "reset_model_each_round": True, "max_rounds": 2, "pgd_steps": 1})
    pert = atk.generate(train200, ctx_for(train200))
    assert float(pert.delta.abs().mean()) * 255 > 3  # started from uniform noise, not from zeros
    assert pert.stats["rounds"] == 2
