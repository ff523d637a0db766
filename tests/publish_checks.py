"""The publish-path check every PGD-family attack's tests share: generate through the
harness (apply, quantize, validate) on a small real slice, and a copy of the attack whose δ
reaches 1.5 ε must be rejected by the validator with the attack's name."""
from __future__ import annotations

import pytest
import torch
from conftest import DATA

from bench.attack import AttackContext, threat_of
from bench.config import parse_matrix
from bench.perturbation import apply_perturbation
from bench.plan import plan
from bench.poison import load_dataset, make_poison
from bench.threat import ThreatModelError, validate_poison
from registry import ATTACKS


def publish(name: str, params: dict):
    """(published poison, clean splits, validated params) of ``name`` on 200 cifar10-mini images."""
    m = parse_matrix({
        "datasets": [{"name": "cifar10-mini", "n_train": 200, "n_test": 50}],
        "attacks": [{"name": name, "params": params}], "archs": ["mlp"],
    })
    task = plan(m).cells[0].poison
    clean = load_dataset(task.dataset, DATA)
    poison = make_poison(task, m.apply, clean, None, torch.device("cpu"))  # generate, apply, validate
    return poison, clean, ATTACKS.validate(name, params)


def assert_loud_copy_rejected(name: str, attack_cls: type, params, clean) -> None:
    """``attack_cls`` with its δ scaled to reach 1.5 ε fails validation, naming ``name``."""

    class Loud(attack_cls):
        def generate(self, train, ctx):
            pert = super().generate(train, ctx)
            pert.delta = pert.delta / pert.delta.abs().max() * 1.5 * self.params.epsilon / 255
            return pert

    train = clean.train
    ctx = AttackContext(torch.device("cpu"), 0, train.num_classes, tuple(train.x.shape[1:]))
    published = apply_perturbation(train, Loud(params).generate(train, ctx))
    with pytest.raises(ThreatModelError, match=f"attack '{name}': linf budget .* breached: measured"):
        validate_poison(name, threat_of(name), params, train, published)
