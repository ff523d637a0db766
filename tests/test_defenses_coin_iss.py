"""COIN (random per-pixel displacement, bilinear) and ISS's named filter combinations on real CIFAR-10."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import defenses.iss  # noqa: F401  (registers the ISS names until "iss" is in defenses.PLUGINS)
from bench.color import gray3_uint8 as gray3
from bench.defense import DefenseStack
from bench.models import create_model
from bench.train_config import TrainConfig
from bench.trainer import fit
from defenses.coin import displacement, resample
from defenses.filters import jpeg
from registry import DEFENSES

pytestmark = pytest.mark.usefixtures("one_thread")


def _batch(mini, n=64):
    return mini.train.x[torch.arange(0, 2000, 2000 // n)][:n].float() / 255, mini.train.y[torch.arange(0, 2000, 2000 // n)][:n]


# --------------------------------------------------------------------------- COIN
def test_coin_resampling_is_scipy_map_coordinates_wrap(mini):
    """The displacement model is the reference's: sample (row + dy, col + dx) with order-1
    (bilinear) interpolation and scipy's ``mode="wrap"``, one field for all channels."""
    from scipy.ndimage import map_coordinates

    x, _ = _batch(mini, 16)
    off = displacement((16, 32, 32), 2.0, torch.Generator().manual_seed(3), "cpu")
    ours = resample(x.double(), off.double(), "wrap")
    rows, cols = np.meshgrid(np.arange(32), np.arange(32), indexing="ij")
    for i in range(16):
        dy, dx = off[i, 0].double().numpy(), off[i, 1].double().numpy()
        for c in range(3):
            ref = map_coordinates(x[i, c].double().numpy(), [rows + dy, cols + dx], order=1, mode="wrap")
            np.testing.assert_allclose(ours[i, c].numpy(), ref, atol=1e-9)
    # and the offsets really reach past the edges, so the wrap was exercised
    assert float(off.abs().max()) > 1.9


def test_coin_displacement_is_bounded_by_alpha(mini):
    x, _ = _batch(mini, 64)
    for alpha in (0.5, 2.0):
        off = displacement((64, 32, 32), alpha, torch.Generator().manual_seed(0), "cpu")
        assert float(off.abs().max()) <= alpha and float(off.abs().max()) > 0.95 * alpha
        assert abs(float(off.mean())) < 0.02 * alpha  # U(−α, α): centred
    # on the images: an interior output pixel is a blend of inputs at most ⌈α⌉ pixels away
    g = lambda: torch.Generator().manual_seed(1)
    d = DEFENSES.create("coin", quantize="none")
    out, _ = d.batch_transform(x.clone(), None, g())
    inner = (slice(None), slice(None), slice(3, 29), slice(3, 29))

    def within(r):
        hi = torch.nn.functional.max_pool2d(x, 2 * r + 1, stride=1, padding=r)
        lo = -torch.nn.functional.max_pool2d(-x, 2 * r + 1, stride=1, padding=r)
        return ((out >= lo - 1e-6) & (out <= hi + 1e-6))[inner].float().mean().item()

    assert within(2) == 1.0  # α = 2: every sample point lies in the 5×5 neighbourhood
    assert within(1) < 0.99  # … and a good share of them reach outside the 3×3 one
    small, _ = DEFENSES.create("coin", alpha=0.5, quantize="none").batch_transform(x.clone(), None, g())
    hi = torch.nn.functional.max_pool2d(x, 3, stride=1, padding=1)
    lo = -torch.nn.functional.max_pool2d(-x, 3, stride=1, padding=1)
    assert bool(((small >= lo - 1e-6) & (small <= hi + 1e-6))[inner].all())


def test_coin_is_deterministic_for_a_seed_changes_images_not_labels(mini):
    x, y = _batch(mini, 64)
    d = DEFENSES.create("coin")
    a, ya = d.batch_transform(x.clone(), y.clone(), torch.Generator().manual_seed(7))
    b, yb = d.batch_transform(x.clone(), y.clone(), torch.Generator().manual_seed(7))
    c, _ = d.batch_transform(x.clone(), y.clone(), torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(ya, y) and torch.equal(yb, y)
    assert a.shape == x.shape and float(a.min()) >= 0 and float(a.max()) <= 1
    per_image = (a - x).abs().flatten(1).mean(1) * 255
    assert bool((per_image > 2).all()), per_image.min()  # every image changes, by levels on average
    # quantize=floor (the reference's np.uint8 cast): the output sits on uint8 levels, at or below the float
    lv = a * 255
    assert torch.allclose(lv, lv.round(), atol=1e-3)
    raw, _ = DEFENSES.create("coin", quantize="none").batch_transform(x.clone(), y, torch.Generator().manual_seed(7))
    assert bool((a <= raw + 1e-5).all()) and float((raw - a).max()) < 1 / 255 + 1e-6


def test_coin_runs_in_the_trainer_train_only(mini):
    tr = mini.train.subset(torch.arange(0, 2000, 8))
    te = mini.test.subset(torch.arange(0, 500, 5))
    stack = DefenseStack.build([("coin", {})])
    assert stack.cost == 1.0 and torch.equal(stack.transform_test(te.x), te.x)
    torch.manual_seed(0)
    res = fit(create_model("convnet_cifar", num_classes=10, width=4), tr, te, TrainConfig(epochs=1, batch_size=50, lr=0.05), stack, seed=0)
    assert res.extra["coin"] == {"alpha": 2.0, "boundary": "wrap", "quantize": "floor"}


# --------------------------------------------------------------------------- ISS combinations
def test_iss_names_are_registered_with_iss_defaults():
    assert {"iss-gray", "iss-jpeg", "iss-jpeggray", "jpeggray"} <= set(DEFENSES.list())
    assert DEFENSES.validate("iss-gray").apply_to_test is False
    assert (DEFENSES.validate("iss-jpeg").quality, DEFENSES.validate("iss-jpeg").apply_to_test) == (10, False)
    assert DEFENSES.validate("iss-jpeggray").order == "gray-jpeg" and DEFENSES.validate("jpeggray").order == "jpeg-gray"
    # the existing filters keep their own defaults (and so their cell keys)
    assert DEFENSES.validate("grayscale").model_dump() == {"apply_to_test": True}
    assert DEFENSES.validate("jpeg").model_dump() == {"apply_to_test": False, "quality": 10}


def test_iss_combinations_equal_the_existing_filters_bit_for_bit(mini):
    x, te = mini.train.x[:400], mini.test.x[:100]
    g, j = gray3(x), jpeg(x, 10)
    expect = {
        "iss-gray": g,
        "iss-jpeg": j,
        "iss-jpeggray": jpeg(g, 10),  # ISS aug_train: Grayscale(3), then JPEG
        "jpeggray": gray3(j),  # DUNE: JPEG, then Grayscale(3)
    }
    for name, want in expect.items():
        stack = DefenseStack.build([(name, {})])
        out = stack.transform_train(x.clone())
        assert out.dtype == torch.uint8 and torch.equal(out, want), name
        assert torch.equal(stack.transform_test(te.clone()), te), name  # train only, as ISS
        both = DefenseStack.build([(name, {"apply_to_test": True})])
        assert torch.equal(both.transform_test(te.clone()), both.transform_train(te.clone())), name
    # the same as stacking the existing defenses in that order
    stacked = DefenseStack.build([("grayscale", {"apply_to_test": False}), ("jpeg", {})])
    assert torch.equal(stacked.transform_train(x.clone()), expect["iss-jpeggray"])
    stacked = DefenseStack.build([("jpeg", {}), ("grayscale", {"apply_to_test": False})])
    assert torch.equal(stacked.transform_train(x.clone()), expect["jpeggray"])
    # the two orders are different defenses (they differ in a few % of the values), and both
    # differ from either filter alone
    differ = (expect["iss-jpeggray"] != expect["jpeggray"]).float().mean()
    assert 0 < differ < 0.2 and torch.equal(expect["jpeggray"][:, 0], expect["jpeggray"][:, 2])
    assert not torch.equal(expect["jpeggray"], g) and not torch.equal(expect["jpeggray"], j)
    out = DefenseStack.build([("jpeggray", {"order": "gray-jpeg"})]).transform_train(x.clone())
    assert torch.equal(out, expect["iss-jpeggray"])
    assert torch.equal(DefenseStack.build([("iss-jpeg", {"quality": 50})]).transform_train(x.clone()), jpeg(x, 50))
