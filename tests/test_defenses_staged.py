"""Progressive Staged Training (st, st-cg, st-full) and its ACM, on real CIFAR-10 slices."""
from __future__ import annotations

import pytest
import torch

from bench.data import ImageData, stratified_indices
from bench.defense import DefenseStack
from bench.models import create_model
from bench.train_config import TrainConfig
from bench.trainer import fit
from defenses.st.acm import acm, acm_of_points
from defenses.st.calibrate import calibrate
from defenses.st.lr_rules import geometric, linear

pytestmark = pytest.mark.usefixtures("one_thread")




@pytest.fixture(scope="module")
def small(mini):
    """500 train (all classes) and 200 test images of the real CIFAR-10 slice."""
    return mini.train.subset(torch.arange(0, 2000, 4)), mini.test.subset(torch.arange(0, 500, 2))


def _scripted(stack: DefenseStack, values: list[float], snapshots: list[dict]):
    """Replace ST's ACM by a scripted sequence; keep a copy of the model at each epoch end."""

    def measure(model):
        snapshots.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return values.pop(0)

    stack.defenses[0].measure = measure
    return stack


def test_multiplier_rules_lower_shallow_layers_first():
    assert linear(0, 0.5, 4) == [1.0, 1.0, 1.0, 1.0]
    assert linear(1, 0.5, 4) == [0.5, 0.625, 0.75, 0.875]
    assert linear(2, 0.5, 4) == [0.0, 0.25, 0.5, 0.75]
    assert linear(9, 0.5, 4) == [0.0, 0.0, 0.0, 0.0]
    g = geometric(2, 0.5, 4)
    assert g == sorted(g) and 0 < g[0] < g[-1] < 1 and geometric(0, 0.5, 4) == [1.0] * 4


def test_st_rollback_and_layer_rates_follow_a_scripted_acm_sequence(small):
    tr, te = small
    cfg = TrainConfig(epochs=6, batch_size=100, lr=0.05)
    snaps: list[dict] = []
    stack = _scripted(
        DefenseStack.build([("st", {"tau": 1.0, "beta": 0.5, "val_per_class": 5, "select_n": 0})]),
        [0.5, 1.5, 0.7, 2.0, 0.9, 3.0],  # crosses τ = 1 in epochs 1, 3 and 5
        snaps,
    )
    torch.manual_seed(0)
    model = create_model("mlp", num_classes=10)  # 3 layers: blocks.0, blocks.1, fc
    res = fit(model, tr, te, cfg, stack, seed=0)

    assert [c["action"] for c in res.curve] == ["continue", "rollback"] * 3
    assert res.rollbacks == 3
    rep = res.extra["st"]
    assert rep["reconstruction"] is True and rep["crossings"] == 3 and rep["n_layers"] == 3
    assert [h["count"] for h in rep["acm_history"]] == [0, 1, 1, 2, 2, 3]
    assert [h["acm"] for h in rep["acm_history"]] == [0.5, 1.5, 0.7, 2.0, 0.9, 3.0]
    expect = [linear(c, 0.5, 3) for c in (0, 1, 1, 2, 2, 3)]
    for h, e in zip(rep["acm_history"], expect):
        assert h["lr_mult"] == pytest.approx(e, abs=1e-6)
    assert expect[3] == [0.0, pytest.approx(1 / 3), pytest.approx(2 / 3)]

    # epoch 3 crossed: the model went back to epoch 2's; epoch 4 then trained with the first
    # layer's rate at 0, so that layer ends epoch 4 exactly as it ended epoch 2 ...
    first = [k for k in snaps[0] if k.startswith("blocks.0.")]
    assert first and all(torch.equal(snaps[4][k], snaps[2][k]) for k in first)
    assert not torch.equal(snaps[4]["fc.weight"], snaps[2]["fc.weight"])  # ... while the head moved
    assert not torch.equal(snaps[2][first[0]], snaps[0][first[0]])  # (at c = 1 it still trained)
    # epoch 5 crossed: the final model is the one kept at the end of epoch 4
    final = model.state_dict()
    assert all(torch.equal(final[k], snaps[4][k]) for k in final)
    assert res.clean_acc_final == res.curve[4]["test_acc"]
    kept = [c for c in res.curve if c["action"] == "continue"]
    assert res.clean_acc_peak == max(c["test_acc"] for c in kept) and res.peak_epoch in (0, 2, 4)


def test_st_full_fine_tunes_every_layer_after_the_staged_stage(small):
    tr, te = small
    snaps: list[dict] = []
    stack = _scripted(
        DefenseStack.build([("st-full", {"tau": 1.0, "beta": 0.5, "val_per_class": 5, "finetune_epochs": 2, "finetune_lr": 0.02, "select_n": 0})]),
        [5.0, 5.0, 5.0],  # every staged epoch crosses: all of stage 0 is rolled back
        snaps,
    )
    torch.manual_seed(0)
    model = create_model("mlp", num_classes=10)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    res = fit(model, tr, te, TrainConfig(epochs=3, batch_size=100, lr=0.05), stack, seed=0)
    assert [c["stage"] for c in res.curve] == [0, 0, 0, 1, 1] and res.epochs_run == 5
    assert [c["action"] for c in res.curve] == ["rollback"] * 3 + ["continue"] * 2
    assert len(snaps) == 3  # ACM is not measured while fine-tuning
    rep = res.extra["st"]
    assert rep["crossings"] == 3 and rep["acm_history"][-1]["lr_mult"] == pytest.approx([2 * m for m in linear(3, 0.5, 3)])
    # the first layer was frozen (λ = 0) when stage 0 ended; fine-tuning trains it again
    assert not torch.equal(model.state_dict()["blocks.0.0.weight"], start["blocks.0.0.weight"])
    assert res.curve[3]["lr"] == pytest.approx(0.02) and res.peak_epoch in (3, 4)


def test_st_validation_set_is_stratified_from_the_poisoned_train_set(small):
    tr, te = small
    poisoned = ImageData(tr.x.flip(-1), tr.y, tr.classes)  # any published (transformed) images
    st = DefenseStack.build([("st", {"val_per_class": 7, "val_classes": 4, "select_n": 0})]).defenses[0]
    st.setup(None, poisoned, 10)
    assert torch.bincount(st.val_y, minlength=10).tolist() == [7, 7, 7, 7, 0, 0, 0, 0, 0, 0]
    rows = {bytes(r.numpy()) for r in poisoned.x.flatten(1)}
    assert all(bytes(v.numpy()) in rows for v in st.val_x.flatten(1))


def _blobs(separation: float, g: torch.Generator):
    labels = torch.arange(10).repeat_interleave(40)
    angle = 2 * torch.pi * torch.arange(10) / 10
    centers = separation * torch.stack([angle.cos(), angle.sin()], 1)
    return centers[labels] + torch.randn(400, 2, generator=g), labels


@pytest.mark.parametrize("formula", ["center-ratio", "inverse-csd"])
def test_acm_is_larger_for_clustered_points_and_scale_free(formula):
    g = torch.Generator().manual_seed(0)
    tight, labels = _blobs(12.0, g)
    loose, _ = _blobs(3.0, g)
    shuffled = labels[torch.randperm(400, generator=g)]  # the same points, labels at random
    a_tight, a_loose, a_rand = (acm_of_points(p, lab, formula) for p, lab in ((tight, labels), (loose, labels), (tight, shuffled)))
    assert a_tight > a_loose > a_rand and a_tight > 5 * a_rand
    assert acm_of_points(tight * 37.0, labels, formula) == pytest.approx(a_tight, rel=1e-6)


def test_acm_of_real_activations_grows_as_a_model_fits_the_set(mini):
    """t-SNE ACM of penultimate activations of 200 real images: an untrained MLP's are mixed,
    those of an MLP fitted to the same images cluster by class, as ST expects of a model
    that has fitted (a shortcut of) its training set."""
    v = mini.train.subset(stratified_indices(mini.train.y, 200, 0))
    torch.manual_seed(0)
    model = create_model("mlp", num_classes=10)
    before = acm(model, v.x, v.y, tsne_iters=300)  # center-ratio on a 2-D t-SNE
    cfg = TrainConfig(epochs=30, batch_size=50, lr=0.05, augment="none", eval_every=30)
    res = fit(model, v, mini.test.subset(torch.arange(0, 500, 25)), cfg, seed=0)
    assert res.train_acc_final > 0.5
    after = acm(model, v.x, v.y, tsne_iters=300)
    assert after > 2.5 * before, (before, after)
    assert acm(model, v.x, v.y, embedding="pca") > 2 * acm(create_model("mlp", num_classes=10), v.x, v.y, embedding="pca")


def test_calibrate_keeps_the_pair_that_scores_best_on_clean_images(small):
    tr, te = small
    val = te.subset(stratified_indices(te.y, 20, 0))
    out = calibrate(
        lambda: create_model("mlp", num_classes=10), tr, val, TrainConfig(epochs=2, batch_size=100, lr=0.05),
        taus=[0.01, 1e9], betas=[0.5], embedding="pca", val_per_class=5,
    )
    assert [(s["tau"], s["beta"]) for s in out["scores"]] == [(0.01, 0.5), (1e9, 0.5)]
    assert out["scores"][0]["crossings"] == 2 and out["scores"][1]["crossings"] == 0  # τ tiny: every epoch crosses
    assert out["val_acc"] == max(s["val_acc"] for s in out["scores"])
    assert (out["tau"], out["beta"]) == next((s["tau"], s["beta"]) for s in out["scores"] if s["val_acc"] == out["val_acc"])


@pytest.mark.parametrize("variant", ["st", "st-cg", "st-full"])
def test_st_never_ends_below_the_best_model_it_has_seen(mini, variant):
    """On a poisoned slice (a class-wise shortcut), with a τ low enough to roll back and freeze
    layers: the model ST ends with scores, on its clean held-out images, as well as the best
    epoch it saw, whatever the rollbacks did; its row says how τ and β were chosen."""
    from bench.perturbation import Perturbation, apply_perturbation
    from bench.trainer import accuracy

    tr = mini.train.subset(torch.arange(0, 2000, 4))
    held = mini.train.subset(torch.arange(1, 2000, 40))  # 50 clean images outside tr
    te = mini.test.subset(torch.arange(0, 500, 2))
    g = torch.Generator().manual_seed(0)
    shortcut = Perturbation((torch.rand((10, 3, 32, 32), generator=g) * 2 - 1) * 32 / 255, "class")
    poisoned = apply_perturbation(tr, shortcut)
    params = {"tau": 0.3, "beta": 0.5, "val_per_class": 5, "embedding": "pca", "calibration": "test: a forced low tau"}
    if variant == "st-full":
        params |= {"finetune_epochs": 2, "finetune_lr": 0.02}
    stack = DefenseStack.build([(variant, params)])
    torch.manual_seed(0)
    model = create_model("convnet_cifar", num_classes=10)
    res = fit(model, poisoned, te, TrainConfig(epochs=5, batch_size=50, lr=0.05), stack, seed=0, holdout=held)
    rep = res.extra["st"]
    assert rep["crossings"] >= 1  # the rollbacks and the layer freezing did act
    st = stack.defenses[0]
    ended = accuracy(model, st.sel_x, st.sel_y)
    seen = [h["select_acc"] for h in rep["select_history"]]
    assert len(seen) == res.epochs_run and ended >= max(seen) - 1e-9 and rep["best"]["score"] == max(seen)
    assert res.clean_acc_final == pytest.approx(accuracy(model, te.x, te.y))  # the row's number is the model kept
    assert res.clean_acc_peak >= res.clean_acc_final  # the model ST ends with is one training kept
    assert rep["calibration"] == "test: a forced low tau" and rep["select_n"] == 20


def test_calibrate_st_command_scores_the_grid_on_the_holdout_of_a_matrix_poison(tmp_path):
    """`uebench calibrate-st` takes the matrix's poison and its ST params, trains one exploiter
    per (τ, β), and records every holdout score and the best pair; a dataset without a holdout
    or an attack the matrix lacks is a one-line error that writes nothing."""
    import json

    from conftest import run_cli

    cfg = tmp_path / "cal.yaml"
    cfg.write_text(
        "name: cal\n"
        "datasets: [{name: cifar10-mini, n_train: 300, n_test: 100, holdout: 20}]\n"
        "attacks: [{name: random, params: {mode: class}}]\n"
        "defenses: [standard, {name: st, params: {val_per_class: 5, tsne_iters: 250, select_n: 20}}]\n"
        "archs: [mlp]\ntrain: {epochs: 3, batch_size: 64, lr: 0.05}\n"
    )
    env = {**__import__("os").environ, "UEBENCH_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "cal.json"
    proc = run_cli("calibrate-st", str(cfg), "--attack", "random", "--taus", "0.3,50", "--betas", "0.5", "--output", str(out), env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rec = json.loads(out.read_text())
    assert [(s["tau"], s["beta"]) for s in rec["scores"]] == [(0.3, 0.5), (50.0, 0.5)]
    assert rec["holdout"] == 20 and rec["params"] == {"val_per_class": 5, "tsne_iters": 250, "select_n": 20}
    best = max(rec["scores"], key=lambda s: s["val_acc"])
    assert (rec["tau"], rec["beta"], rec["holdout_acc"]) == (best["tau"], best["beta"], best["val_acc"])
    assert rec["scores"][1]["crossings"] == 0 and rec["scores"][0]["crossings"] > 0  # τ = 50 never crosses, 0.3 does
    assert f"tau: {rec['tau']:g}" in proc.stdout and "calibration:" in proc.stdout

    nohold = tmp_path / "nohold.yaml"
    nohold.write_text(cfg.read_text().replace(", holdout: 20", ""))
    for args, msg in (([str(nohold), "--attack", "random"], "has no clean holdout"), ([str(cfg), "--attack", "em-sample"], "--attack: no fully poisoned cell")):
        bad = tmp_path / "bad.json"
        proc = run_cli("calibrate-st", *args, "--output", str(bad), env=env)
        assert proc.returncode == 2 and msg in proc.stderr and len(proc.stderr.strip().splitlines()) == 1 and not bad.exists(), proc.stderr
