"""Batch augmentations on real CIFAR-10 batches: mixup, cutmix, cutout, colour (CG)."""
from __future__ import annotations

import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from defenses.color_ops import adjust_brightness, adjust_contrast, adjust_hue, adjust_saturation, color_jitter
from registry import DEFENSES

pytestmark = pytest.mark.usefixtures("one_thread")




def _batch(splits, n=256):
    """n real training images of all classes (the slice is stored class by class), as floats."""
    idx = torch.randperm(len(splits.train), generator=torch.Generator().manual_seed(0))[:n]
    return splits.train.x[idx].float() / 255.0, splits.train.y[idx]


def _defense(name, **params):
    d = DEFENSES.create(name, **params)
    d.setup(None, None, 10)
    return d


def _partner(y_out, y, i):
    """(λ, partner class) from a mixed target with exactly two classes, else None."""
    nz = torch.nonzero(y_out[i] > 1e-9).flatten().tolist()
    if len(nz) != 2:
        return None
    other = [c for c in nz if c != int(y[i])]
    return float(y_out[i, int(y[i])]), other[0]


def test_mixup_mixes_images_and_labels_with_the_same_lambda(mini):
    x, y = _batch(mini)
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    xm, ym = _defense("mixup", prob=1.0, num_mix=1).batch_transform(x, y, g)
    assert ym.shape == (len(y), 10) and torch.allclose(ym.sum(1), torch.ones(len(y)))
    checked = 0
    for i in range(len(y)):
        got = _partner(ym, y, i)
        if got is None:  # partner of the same class: the target stays one-hot
            assert ym[i, y[i]] == pytest.approx(1.0)
            continue
        lam, cls = got
        cands = torch.nonzero(y == cls).flatten()
        expect = lam * x[i] + (1 - lam) * x[cands]
        assert (expect - xm[i]).abs().flatten(1).amax(1).min() < 1e-5, i
        checked += 1
    assert checked > 0.8 * len(y)


def test_mixup_default_rounds_leave_a_quarter_unmixed(mini):
    x, y = _batch(mini, 2000)
    g = torch.Generator().manual_seed(1)
    torch.manual_seed(1)
    xm, ym = _defense("mixup").batch_transform(x, y, g)  # EM code: 2 rounds, each with p 0.5
    untouched = (xm == x).flatten(1).all(1).float().mean().item()
    assert 0.2 < untouched < 0.3  # 0.5² = 0.25
    assert torch.allclose(ym.sum(1), torch.ones(len(y)), atol=1e-6)
    assert torch.equal(ym.argmax(1)[(xm == x).flatten(1).all(1)], y[(xm == x).flatten(1).all(1)])


def test_cutmix_pastes_one_box_and_weights_labels_by_its_area(mini):
    x, y = _batch(mini)
    g = torch.Generator().manual_seed(2)
    torch.manual_seed(2)
    xm, ym = _defense("cutmix", prob=1.0, num_mix=1).batch_transform(x, y, g)
    assert torch.allclose(ym.sum(1), torch.ones(len(y)), atol=1e-6)
    exact = checked = 0
    for i in range(len(y)):
        got = _partner(ym, y, i)
        if got is None:
            continue
        lam, cls = got
        diff = (xm[i] != x[i]).any(0)
        rows, cols = torch.nonzero(diff.any(1)).flatten(), torch.nonzero(diff.any(0)).flatten()
        r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        box_frac = float((r1 - r0) * (c1 - c0)) / (32 * 32)
        assert box_frac <= 1 - lam + 1e-6  # every changed pixel lies in a box of the labelled area
        exact += abs(box_frac - (1 - lam)) < 1e-6
        # inside the box the pixels are a partner's of the labelled class, outside they are unchanged
        patch = xm[i][:, r0:r1, c0:c1]
        cands = x[torch.nonzero(y == cls).flatten()][:, :, r0:r1, c0:c1]
        assert (cands == patch).flatten(1).all(1).any(), i
        assert torch.equal(xm[i][:, ~diff], x[i][:, ~diff])
        checked += 1
    assert checked > 0.5 * len(y) and exact > 0.9 * checked


def test_cutout_zeroes_one_clipped_square(mini):
    x, y = _batch(mini)
    g = torch.Generator().manual_seed(3)
    xc, yc = _defense("cutout").batch_transform(x, y, g)
    assert yc is y
    sizes = []
    for i in range(len(y)):
        changed = (xc[i] != x[i]).any(0)
        rows, cols = torch.nonzero(changed.any(1)).flatten(), torch.nonzero(changed.any(0)).flatten()
        r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        assert bool((xc[i][:, r0:r1, c0:c1] == 0).all())  # a zeroed rectangle ...
        outside = torch.ones_like(changed)
        outside[r0:r1, c0:c1] = False
        assert torch.equal(xc[i][:, outside], x[i][:, outside])  # ... and nothing else touched
        h, w = int(r1 - r0), int(c1 - c0)
        assert h <= 16 and w <= 16
        sizes.append(h * w)
    assert 0.2 < sizes.count(256) / len(sizes) < 0.4  # centre within 8 px of both borders: (17/32)² ≈ 0.28


def test_batched_colour_ops_match_torchvision_per_image(mini):
    x, _ = _batch(mini, 48)
    g = torch.Generator().manual_seed(4)
    f = 0.5 + torch.rand(48, generator=g)
    h = torch.rand(48, generator=g) - 0.5
    pairs = [
        (adjust_brightness(x, f), [TF.adjust_brightness(x[i], float(f[i])) for i in range(48)]),
        (adjust_contrast(x, f), [TF.adjust_contrast(x[i], float(f[i])) for i in range(48)]),
        (adjust_saturation(x, f), [TF.adjust_saturation(x[i], float(f[i])) for i in range(48)]),
        (adjust_hue(x, h), [TF.adjust_hue(x[i], float(h[i])) for i in range(48)]),
    ]
    for ours, ref in pairs:
        assert (ours - torch.stack(ref)).abs().max() < 1e-5
    order = [3, 1, 0, 2]
    ours = color_jitter(x, [f, f, f, h], order)
    ref = []
    for i in range(48):
        im = x[i]
        for k in order:
            fn = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)[k]
            im = fn(im, float(h[i] if k == 3 else f[i]))
        ref.append(im)
    assert (ours - torch.stack(ref)).abs().max() < 1e-5


def test_color_jitters_per_image_and_grays_a_fifth(mini):
    x, y = _batch(mini, 2000)
    g = torch.Generator().manual_seed(5)
    xc, yc = _defense("color").batch_transform(x, y, g)
    assert yc is y and xc.shape == x.shape and 0 <= xc.min() and xc.max() <= 1
    was_gray = (x[:, 0] == x[:, 1]).flatten(1).all(1) & (x[:, 1] == x[:, 2]).flatten(1).all(1)
    is_gray = ((xc[:, 0] - xc[:, 1]).abs().flatten(1).amax(1) < 1e-6) & ((xc[:, 1] - xc[:, 2]).abs().flatten(1).amax(1) < 1e-6)
    frac_gray = (is_gray & ~was_gray).float().sum() / (~was_gray).float().sum()
    assert 0.16 < frac_gray < 0.24  # RandomGrayscale(p=0.2)
    untouched = (xc == x).flatten(1).all(1).float().mean()
    assert 0.11 < untouched < 0.21  # no jitter (0.2) and no gray (0.8): 0.16
    # factors are drawn per image: brightness-only jitter scales each image by its own factor
    xb, _ = _defense("color", jitter_p=1.0, contrast=0, saturation=0, hue=0, gray_p=0).batch_transform(x, y, g)
    unclipped = (xb < 1) & (x > 0.05)
    ratio = torch.stack([(xb[i][unclipped[i]] / x[i][unclipped[i]]).median() for i in range(200)])
    assert ratio.min() >= 0.6 - 1e-4 and ratio.max() <= 1.4 + 1e-4 and ratio.std() > 0.15
