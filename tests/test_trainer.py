"""The exploiter training engine: batched augmentation, determinism, and that it learns."""
from __future__ import annotations

import pytest
import torch

from bench.batches import EpochAugmenter, crop_flip
from bench.data import ImageData
from bench.models import create_model
from bench.train_config import TrainConfig
from bench.trainer import fit, lr_at


def test_crop_flip_is_a_shifted_and_mirrored_window(mini):
    x = mini.train.x[:64]
    pad = 4
    xp = torch.nn.functional.pad(x, (pad,) * 4)
    g = torch.Generator().manual_seed(0)
    out = crop_flip(xp, torch.arange(64), (32, 32), pad, True, g)
    assert out.dtype == torch.uint8 and out.shape == x.shape
    n_flipped = 0
    for i in range(64):
        windows = [(dy, dx, xp[i, :, dy : dy + 32, dx : dx + 32]) for dy in range(9) for dx in range(9)]
        hits = [(dy, dx, f) for dy, dx, w in windows for f in (False, True) if torch.equal(out[i], w.flip(-1) if f else w)]
        assert hits, f"image {i} is not a crop of its padded original"
        n_flipped += all(f for _, _, f in hits)
    assert 16 < n_flipped < 48  # about half are mirrored
    # no padding and no flip is the identity
    same = crop_flip(x, torch.arange(64), (32, 32), 0, False, g)
    assert torch.equal(same, x)


@pytest.mark.parametrize("budget", [0, 1 << 31], ids=["scatter-flip", "mirror-stack"])
def test_epoch_augmenter_equals_crop_flip(mini, budget):
    """Both epoch paths (mirrored copy kept, or flip scattered afterwards) give exactly the
    crops and mirrors `crop_flip` draws from the same generator state."""
    x = mini.train.x[:300]
    aug = EpochAugmenter(x, 4, mirror_budget=budget)
    assert (aug.stacked is None) == (budget == 0)
    perm = torch.randperm(300, generator=torch.Generator().manual_seed(3))
    got = aug(perm, torch.Generator().manual_seed(7))
    want = crop_flip(torch.nn.functional.pad(x, (4,) * 4), perm, (32, 32), 4, True, torch.Generator().manual_seed(7))
    assert torch.equal(got, want)
    assert not torch.equal(got, x[perm])  # it did augment


def test_lr_schedules():
    cos = TrainConfig(epochs=10, lr=0.1)
    assert lr_at(cos, 0, 0, 5) == pytest.approx(0.1)
    assert lr_at(cos, 5, 0, 5) == pytest.approx(0.05)
    ms = TrainConfig(epochs=10, lr=0.1, schedule="multistep", milestones=(0.5, 0.8), gamma=0.1)
    assert [round(lr_at(ms, e, 0, 1), 6) for e in (0, 4, 5, 8, 9)] == [0.1, 0.1, 0.01, 0.001, 0.001]
    oc = TrainConfig(epochs=2, lr=0.2, schedule="onecycle", warmup_frac=0.25)
    lrs = [lr_at(oc, e, s, 4) for e in range(2) for s in range(4)]
    assert max(lrs) == pytest.approx(0.2) and lrs[0] == 0.0 and lrs.index(max(lrs)) == 2


def test_training_is_deterministic_for_a_seed(mini):
    tr = mini.train.subset(torch.arange(0, 2000, 8))
    te = mini.test.subset(torch.arange(0, 500, 5))
    cfg = TrainConfig(epochs=1, batch_size=64, lr=0.05)
    runs = []
    for _ in range(2):
        torch.manual_seed(3)
        model = create_model("mlp", num_classes=10)
        runs.append(fit(model, tr, te, cfg, seed=3).curve[0])
    for k in ("train_loss", "train_acc", "test_acc"):
        assert runs[0][k] == runs[1][k]


def test_trainer_learns_real_cifar10(mini):
    """convnet_cifar on a 2,000-image slice of real CIFAR-10 beats 40 % clean accuracy."""
    torch.manual_seed(0)
    model = create_model("convnet_cifar", num_classes=10)
    res = fit(model, mini.train, mini.test, TrainConfig(epochs=8, lr=0.05), seed=0)
    assert res.clean_acc_final > 0.40, res.curve
    assert res.clean_acc_peak >= res.clean_acc_final
    assert len(res.curve) == 8 and all(c["test_acc"] is not None for c in res.curve)
    assert res.curve[-1]["train_loss"] < res.curve[0]["train_loss"]


def test_training_on_labels_it_cannot_learn_stays_at_chance(mini):
    """Sanity check that the score is measured on the clean test set: shuffled labels → ~10 %."""
    g = torch.Generator().manual_seed(0)
    tr = mini.train
    shuffled = ImageData(tr.x, tr.y[torch.randperm(len(tr), generator=g)], tr.classes)
    torch.manual_seed(0)
    model = create_model("mlp", num_classes=10)
    res = fit(model, shuffled, mini.test, TrainConfig(epochs=3, lr=0.05), seed=0)
    assert res.clean_acc_final < 0.2


def test_perf_benchmark_runs_and_reports_every_loop(capsys):
    """The benchmark itself works (its numbers are machine facts, not asserted here)."""
    from bench.perf.__main__ import main

    assert main(["trainer", "--archs", "mlp", "--n", "300", "--reps", "1", "--epochs", "2", "--min-seconds", "0"]) == 0
    out = capsys.readouterr().out
    header, row = [ln for ln in out.splitlines() if ln.startswith(("model", "mlp "))]
    assert "trainer/pure" in header and "trainer/pure-fused" in header
    speeds = [float(v) for v in row.split()[2:]]
    assert len(speeds) == 7 and all(v > 0 for v in speeds)
