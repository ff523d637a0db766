"""Input filters on real CIFAR-10: grayscale, bit-depth reduction, JPEG, Gaussian blur."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from bench.color import gray3_uint8 as gray3
from bench.defense import DefenseStack
from bench.models import create_model
from bench.train_config import TrainConfig
from bench.trainer import accuracy, fit
from defenses.filters import gaussian_blur, jpeg

pytestmark = pytest.mark.usefixtures("one_thread")




def _pil(x: torch.Tensor, fn) -> torch.Tensor:
    """Apply a PIL function image by image (the reference pipelines' way) and restack."""
    out = [np.asarray(fn(Image.fromarray(im.permute(1, 2, 0).numpy()))) for im in x]
    return torch.stack([torch.from_numpy(o.copy()).permute(2, 0, 1) for o in out])


def test_grayscale_equals_pil_gray3_and_makes_channels_equal(mini):
    x = mini.train.x[:300]
    out = gray3(x)
    assert out.dtype == torch.uint8 and out.shape == x.shape
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 1], out[:, 2])
    ref = _pil(x, lambda im: im.convert("L").convert("RGB"))
    assert torch.equal(out, ref)  # bit-exact with PIL's Grayscale(num_output_channels=3)
    assert not torch.equal(out, x)


def test_grayscale_reaches_the_test_set_only_when_configured(mini):
    tr = mini.train.subset(torch.arange(0, 2000, 4))
    te = mini.test.subset(torch.arange(0, 500, 2))
    gray_both = DefenseStack.build([("grayscale", {})])
    iss = DefenseStack.build([("grayscale", {"apply_to_test": False})])
    t = gray_both.transform_test(te.x)
    assert torch.equal(t[:, 0], t[:, 2]) and torch.equal(t, gray3(te.x))
    assert torch.equal(iss.transform_test(te.x), te.x)
    assert torch.equal(iss.transform_train(tr.x), gray3(tr.x))
    # through the trainer: the reported accuracy is the one on the grayed test images
    torch.manual_seed(0)
    model = create_model("mlp", num_classes=10)
    res = fit(model, tr, te, TrainConfig(epochs=1, batch_size=64, lr=0.05), gray_both, seed=0)
    assert res.clean_acc_final == accuracy(model, gray3(te.x), te.y)
    with torch.no_grad():
        model.eval()
        assert not torch.allclose(model(gray3(te.x).float() / 255), model(te.x.float() / 255))


@pytest.mark.parametrize("method", ["posterize", "round"])
def test_bdr_leaves_exactly_two_to_the_bits_levels(mini, method):
    x = mini.train.x[:500]
    for bits in range(1, 8):
        out = DefenseStack.build([("bdr", {"bits": bits, "method": method})]).transform_train(x)
        assert out.dtype == torch.uint8 and out.shape == x.shape
        levels = torch.bincount(out.flatten(), minlength=256).nonzero().flatten()
        assert len(levels) == 2**bits, (bits, levels)
        err = (out.int() - x.int()).abs().max().item()
        if method == "posterize":  # floor to a multiple of 2^(8-b)
            assert torch.all(levels % 2 ** (8 - bits) == 0) and torch.all(out <= x)
            assert err < 2 ** (8 - bits)
        else:  # nearest of 2^b evenly spaced levels on [0, 255]
            assert levels[0] == 0 and levels[-1] == 255
            assert err <= 255 / (2 * (2**bits - 1)) + 0.5


def test_bdr_is_train_only_by_default(mini):
    stack = DefenseStack.build([("bdr", {"bits": 2})])
    te = mini.test.x[:50]
    assert torch.equal(stack.transform_test(te), te)
    on = DefenseStack.build([("bdr", {"bits": 2, "apply_to_test": True})])
    assert torch.unique(on.transform_test(te)).tolist() == [0, 64, 128, 192]


def test_jpeg_changes_images_keeps_shape_and_matches_pil(mini):
    x = mini.train.x[:200]
    stack = DefenseStack.build([("jpeg", {})])  # quality 10
    out = stack.transform_train(x)
    assert out.dtype == torch.uint8 and out.shape == x.shape and out.device == x.device
    assert (out != x).float().mean() > 0.5
    assert torch.equal(stack.transform_test(x), x)  # train only by default
    ref = _pil(x[:50], lambda im: _pil_jpeg(im, 10))
    assert torch.equal(out[:50], ref)  # the same libjpeg round trip as the ISS code's PIL save
    gentle = jpeg(x, 95)
    assert (gentle.int() - x.int()).abs().float().mean() < (out.int() - x.int()).abs().float().mean() / 4
    gray = gray3(x)[:, :1].contiguous()  # single-channel images keep their single channel
    assert jpeg(gray, 10).shape == gray.shape


def _pil_jpeg(im: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def test_gaussian_blur_smooths_and_keeps_flat_images(mini):
    x = mini.train.x[:200]
    out = DefenseStack.build([("gaussian", {"kernel_size": 5, "sigma": 1.5})]).transform_train(x)
    assert out.dtype == torch.uint8 and out.shape == x.shape

    def tv(t):
        t = t.float()
        return (t[..., 1:, :] - t[..., :-1, :]).abs().mean() + (t[..., 1:] - t[..., :-1]).abs().mean()

    assert tv(out) < 0.6 * tv(x)
    flat = torch.full((2, 3, 32, 32), 77, dtype=torch.uint8)
    assert torch.equal(gaussian_blur(flat, 5, 2.0), flat)


def test_filter_params_fail_with_one_line(mini):
    from registry import DEFENSES, RegistryError

    with pytest.raises(RegistryError, match=r"kernel_size: must be odd, e.g. 5"):
        DEFENSES.create("gaussian", kernel_size=4)
    with pytest.raises(RegistryError, match=r"bits: .*less than or equal to 7"):
        DEFENSES.create("bdr", bits=8)


@pytest.mark.parametrize("spec", [("grayscale", {}), ("bdr", {"bits": 3}), ("bdr", {"bits": 5, "method": "round"})])
def test_per_pixel_filters_commute_with_crop_and_flip(mini, spec):
    """Why filtering once before training equals the reference per-batch pipelines."""
    from bench.batches import crop_flip

    x = mini.train.x[:256]
    f = DefenseStack.build([spec]).transform_train
    pad = lambda t: torch.nn.functional.pad(t, (4, 4, 4, 4))
    idx = torch.randperm(256, generator=torch.Generator().manual_seed(0))
    a = crop_flip(pad(f(x)), idx, (32, 32), 4, True, torch.Generator().manual_seed(1))
    b = f(crop_flip(pad(x), idx, (32, 32), 4, True, torch.Generator().manual_seed(1)))
    assert torch.equal(a, b)
