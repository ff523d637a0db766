"""PGD / FGSM robust accuracy and PGD adversarial training (`at`) on real CIFAR-10."""
from __future__ import annotations

import pytest
import torch

from bench.defense import DefenseStack
from bench.models import create_model
from bench.pgd import PGD, fgsm, pgd
from bench.robust import evaluate_robust
from bench.train_config import RobustEvalConfig, TrainConfig
from bench.trainer import accuracy, fit

pytestmark = pytest.mark.usefixtures("one_thread")

EPS = 8 / 255
CFG = TrainConfig(epochs=5, batch_size=128, lr=0.05)




@pytest.fixture(scope="module")
def standard_mlp(mini):
    torch.manual_seed(0)
    model = create_model("mlp", num_classes=10)
    fit(model, mini.train, mini.test, CFG, seed=0)
    return model.eval()


def test_pgd_stays_in_the_ball_and_raises_the_loss(standard_mlp, mini):
    x = mini.test.x[::4].float() / 255
    y = mini.test.y[::4]
    ce = torch.nn.functional.cross_entropy
    for start in ("uniform", "gaussian", "none"):
        x_adv, _ = pgd(standard_mlp, x, y, PGD(EPS, 0.8 / 255, 20, start=start), generator=torch.Generator().manual_seed(0))
        assert (x_adv - x).abs().max() <= EPS + 1e-6
        assert x_adv.min() >= 0 and x_adv.max() <= 1
        with torch.no_grad():
            assert ce(standard_mlp(x_adv), y) > ce(standard_mlp(x), y) + 0.2
        assert accuracy(standard_mlp, x_adv, y) < 0.7 * accuracy(standard_mlp, x, y)
    x_f = fgsm(standard_mlp, x, y, EPS)
    assert torch.allclose((x_f - x).abs()[(x_f > 0) & (x_f < 1)], torch.tensor(EPS), atol=1e-6)  # one full step


def test_pgd20_lowers_a_trained_models_accuracy(standard_mlp, mini):
    te = mini.test
    out = evaluate_robust(standard_mlp, te.x, te.y, RobustEvalConfig(n_test=500), seed=0)
    assert set(out) == {"robust_acc_fgsm", "robust_acc_pgd20"}
    clean = 100 * accuracy(standard_mlp, te.x, te.y)
    assert clean > 25
    assert out["robust_acc_pgd20"] < 0.7 * clean
    assert out["robust_acc_pgd20"] <= out["robust_acc_fgsm"] + 1.0  # the iterated attack is at least as strong
    assert standard_mlp.training is False  # evaluation leaves the mode as it found it
    only_pgd = evaluate_robust(standard_mlp, te.x, te.y, RobustEvalConfig(fgsm=False, pgd_steps=5, n_test=100), seed=0)
    assert set(only_pgd) == {"robust_acc_pgd20"}


def test_adversarial_training_steps_run_on_adversarial_batches(mini):
    stack = DefenseStack.build([("at", {})])
    assert stack.cost == 11.0  # PGD-10 plus the training pass
    assert DefenseStack.build([("at", {"steps": 7})]).cost == 8.0  # the Going Grayscale paper's PGD-7
    tr = mini.train.subset(torch.arange(0, 2000, 4))
    cfg = TrainConfig(epochs=3, batch_size=100, lr=0.05)
    runs = {}
    for name, st in (("standard", []), ("at", [("at", {})]), ("weak", [("at", {"epsilon": 0.5, "steps": 1})])):
        torch.manual_seed(0)
        runs[name] = fit(create_model("mlp", num_classes=10), tr, mini.test, cfg, DefenseStack.build(st), seed=0)
    at, std = runs["at"], runs["standard"]
    assert all(c["train_loss"] == c["train_loss"] and c["train_loss"] > 0 for c in at.curve)
    # same init, same batches: the PGD batches are harder, so the loss is higher and fewer are right
    assert at.curve[0]["train_loss"] > std.curve[0]["train_loss"] + 0.03
    assert at.train_acc_final < std.train_acc_final
    # train accuracy is counted on the batches the step trained on: a barely perturbed batch
    # scores about as well as a clean one
    assert runs["weak"].train_acc_final > 0.5 * std.train_acc_final > 0.04
    assert at.extra["at"] == {"epsilon": 8.0, "step_size": 2.0, "steps": 10, "start": "gaussian", "craft_mode": "eval"}
    assert 0 <= at.peak_epoch < cfg.epochs and at.clean_acc_peak >= at.clean_acc_final
