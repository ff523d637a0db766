"""Every attack's poison goes through the harness's publish path and passes the validator;
deliberately broken attacks fail it; signed and rectified publication differ as §1.5 says."""
from __future__ import annotations

import pytest
import torch
from conftest import DATA as SHARED_DATA

from attacks.lsp import SyntheticPatches
from attacks.ops import OnePixelShortcut
from attacks.random_noise import RandomNoise
from bench.attack import AttackContext, threat_of
from bench.config import parse_matrix
from bench.perturbation import ApplyConfig, apply_perturbation
from bench.plan import plan
from bench.poison import load_dataset, make_poison
from bench.threat import ThreatModelError, validate_poison
from registry import ATTACKS

#: The cheapest settings of whatever knobs an attack has (unknown fields are left alone).
CHEAP = {
    "source_arch": "mlp",
    "max_rounds": 1,
    "pgd_steps": 2,
    "train_steps": 2,
    "batch_size": 100,
    "lr": 0.01,
    "source_train": {"epochs": 1, "lr": 0.02, "batch_size": 100, "augment": "none"},
}


def cheap_params(name: str) -> dict:
    fields = ATTACKS.get(name).params.model_fields
    return {k: v for k, v in CHEAP.items() if k in fields}


def matrix(name: str, mode: str = "signed"):
    return parse_matrix(
        {
            "datasets": [{"name": "cifar10-mini", "n_train": 200, "n_test": 50}],
            "attacks": [{"name": name, "params": cheap_params(name)}],
            "archs": ["mlp"],
            "apply": {"mode": mode},
        }
    )


@pytest.fixture(scope="module")
def mini200():
    m = matrix("none")
    return load_dataset(plan(m).cells[0].poison.dataset, SHARED_DATA)


@pytest.mark.parametrize("mode", ["signed", "rectified"])
def test_every_attack_passes_the_validator(mini200, mode):
    names = ATTACKS.list()
    assert {"em", "em-sample", "em-class", "uleo-gray", "uleo-augs", "uleo-grayaugs", "em-mlp", "error-max", "ops", "lsp", "random"} <= set(names)
    for name in names:
        if ATTACKS.get(name).meta.get("category") == "external":
            continue  # reads its poison from a file: tests/test_submission.py round-trips it
        m = matrix(name, mode)
        poison = make_poison(plan(m).cells[0].poison, m.apply, mini200, None, torch.device("cpu"))  # generate, apply, validate
        s = poison.facts
        threat = threat_of(name)
        assert s.threat == threat.describe(ATTACKS.validate(name, cheap_params(name))), name
        if threat.norm == "linf":
            assert s.linf <= threat.budget(ATTACKS.validate(name, cheap_params(name))), name
        if threat.norm == "l0":
            assert poison.splits.train.x.ne(mini200.train.x).any(1).flatten(1).sum(1).max() <= s.epsilon, name
        if name != "none":
            assert not torch.equal(poison.splits.train.x, mini200.train.x), name
        assert torch.equal(poison.splits.train.y, mini200.train.y)
        # the row records the source model (transfer: it may differ from the exploiter arch)
        assert s.source_arch == ("mlp" if "source_arch" in ATTACKS.get(name).params.model_fields else ""), name


def ctx_for(data) -> AttackContext:
    return AttackContext(torch.device("cpu"), 0, data.num_classes, tuple(data.x.shape[1:]))


class LoudRandom(RandomNoise):
    """Random noise that ignores its ε (1.5 ε)."""

    def generate(self, train, ctx):
        pert = super().generate(train, ctx)
        pert.delta = pert.delta * 1.5
        return pert


class TwoPixelOPS(OnePixelShortcut):
    """OPS that also paints the top-left pixel (L0 = 2 > 1)."""

    def generate(self, train, ctx):
        pert = super().generate(train, ctx)
        pert.delta[:, :, 0, 0] = 1.0 - train.x[:, :, 0, 0].float() / 255
        return pert


class StretchedLSP(SyntheticPatches):
    """LSP scaled 1.25x past its L2 budget (beyond the validator's rounding slack)."""

    def generate(self, train, ctx):
        pert = super().generate(train, ctx)
        pert.delta = pert.delta * 1.25
        return pert


@pytest.mark.parametrize(
    "name,cls,norm",
    [("random", LoudRandom, "linf"), ("ops", TwoPixelOPS, "l0"), ("lsp", StretchedLSP, "l2")],
)
def test_a_broken_attack_fails_the_validator(mini200, name, cls, norm):
    clean = mini200.train
    honest = ATTACKS.create(name)
    validate_poison(name, threat_of(name), honest.params, clean, apply_perturbation(clean, honest.generate(clean, ctx_for(clean))))
    broken = cls(honest.params)
    published = apply_perturbation(clean, broken.generate(clean, ctx_for(clean)))
    with pytest.raises(ThreatModelError, match=f"attack '{name}': {norm} budget .* breached: measured"):
        validate_poison(name, threat_of(name), broken.params, clean, published)


def test_signed_and_rectified_differ_as_the_em_code(mini200):
    """§1.5 on a real error-minimizing δ: signed = round(clip(x + δ)); rectified (the EM code) =
    floor(clip(x + max(δ, 0))), so every negative value of δ vanishes and no pixel gets darker."""
    clean = mini200.train
    atk = ATTACKS.create("em-sample", **{**cheap_params("em-sample"), "pgd_steps": 5, "step_size": 2})
    pert = atk.generate(clean, ctx_for(clean))
    d255 = pert.delta * 255
    assert (d255 < -1).float().mean() > 0.2 and (d255 > 1).float().mean() > 0.2  # δ has both signs
    x = clean.x.float()
    signed = apply_perturbation(clean, pert, ApplyConfig(mode="signed")).x
    rect = apply_perturbation(clean, pert, ApplyConfig(mode="rectified")).x
    assert torch.equal(signed, (x + d255).clamp(0, 255).round().to(torch.uint8))
    assert torch.equal(rect, (x + d255.clamp(min=0)).clamp(0, 255).floor().to(torch.uint8))
    neg = pert.delta < 0
    assert torch.equal(rect[neg], clean.x[neg])  # negative noise is dropped …
    assert (rect >= clean.x).all()  # … so the code only ever brightens
    assert (signed[neg] < clean.x[neg]).float().mean() > 0.5  # the paper's x + δ darkens there
    pos = d255 >= 1
    assert torch.equal(rect[pos], (x[pos] + d255[pos]).clamp(max=255).floor().to(torch.uint8))
    floor_vs_round = signed[pos & (x + d255 <= 255)].int() - rect[pos & (x + d255 <= 255)].int()
    assert set(floor_vs_round.unique().tolist()) <= {0, 1}  # truncation vs rounding: at most one level
