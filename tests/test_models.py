"""CIFAR models in timm's registry, `create_model`, `classifier_of` and `blocks_of`."""
from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

from bench import models as M

OURS = ["resnet18_cifar", "resnet50_cifar", "densenet121_cifar", "vgg11_cifar", "vgg16_cifar",
        "wrn28_10", "wrn34_10", "mlp", "convnet_cifar"]


@pytest.fixture(scope="module")
def built() -> dict[str, nn.Module]:
    """One 7-class instance of each model, shared: building the big ones dominates the runtime."""
    return {name: M.create_model(name, num_classes=7).eval() for name in OURS}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_resnet18_cifar_is_em_reference_and_registered_in_timm():
    model = timm.create_model("resnet18_cifar", num_classes=10)
    assert n_params(model) == 11_173_962
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    assert isinstance(model.maxpool, nn.Identity) and model.conv1.stride == (1, 1)
    assert {n for n in OURS if "cifar" in n} <= set(timm.list_models("*cifar*"))
    assert set(OURS) <= set(M.list_models())
    assert model.pretrained_cfg["mean"] == (0.0, 0.0, 0.0)  # no ImageNet normalization inherited


@pytest.mark.parametrize("name", OURS)
def test_forward_nchw_and_channels_last(built, name):
    model = built[name]
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        out = model(x)
        out_cl = model(x.contiguous(memory_format=torch.channels_last))
    assert out.shape == out_cl.shape == (2, 7)
    torch.testing.assert_close(out, out_cl, rtol=1e-4, atol=1e-4)
    head = M.classifier_of(model)
    assert isinstance(head, nn.Linear) and head.out_features == 7


def test_reference_param_counts(built):
    """Counts of the EM/Going Grayscale reference code at 10 classes (VGG convs keep their bias)."""
    expect = {"vgg11_cifar": 9_231_114, "vgg16_cifar": 14_728_266, "wrn28_10": 36_479_194,
              "wrn34_10": 46_160_474, "mlp": 820_874}
    # the shared instances have 7 classes: add back the 3 missing rows of the final Linear
    got = {name: n_params(built[name]) + 3 * (built[name].num_features + 1) for name in expect}
    assert got == expect


def test_vgg_head_and_mlp_sigmoid(built):
    fc = built["vgg11_cifar"].get_classifier()
    assert isinstance(fc, nn.Linear) and (fc.in_features, fc.out_features) == (512, 7)
    model = M.create_model("mlp", 7, sigmoid_output=True)
    out = model(torch.rand(4, 3, 32, 32) * 10)
    assert ((out > 0) & (out < 1)).all()
    small = M.create_model("mlp", 3, in_chans=1, img_size=16)  # img_size reaches the entrypoint
    assert small(torch.rand(2, 1, 16, 16)).shape == (2, 3)


def test_penultimate_hook(built):
    model = built["convnet_cifar"]
    seen = []
    M.classifier_of(model).register_forward_hook(lambda m, inp, out: seen.append(inp[0]))
    model(torch.rand(3, 3, 32, 32))
    assert seen[0].shape == (3, model.num_features)


@pytest.mark.parametrize("name, n_blocks, stem, head", [
    ("resnet18_cifar", 10, "conv1.weight", "fc.weight"),
    ("vgg11_cifar", 9, "blocks.0.0.weight", "fc.weight"),
    ("mlp", 3, "blocks.0.0.weight", "fc.weight"),
    ("convnet_cifar", 5, "stem.0.weight", "fc.weight"),
    ("wrn28_10", 14, "stem.weight", "fc.weight"),
    ("densenet121_cifar", 6, "features.conv0.weight", "classifier.weight"),
    ("resnet18", 10, "conv1.weight", "fc.weight"),
    ("vit_tiny_patch16_224", 14, "cls_token", "head.weight"),  # loose params: cls_token, pos_embed
])
def test_blocks_cover_every_parameter_once_in_order(built, name, n_blocks, stem, head):
    kw = {"img_size": 32, "patch_size": 4} if name.startswith("vit") else {}
    model = built[name] if name in built else M.create_model(name, 7, **kw)
    blocks = M.blocks_of(model)
    assert len(blocks) == n_blocks
    ids = [id(p) for b in blocks for p in b.parameters()]
    assert len(ids) == len(set(ids)), "a parameter is in two blocks"
    assert set(ids) == {id(p) for p in model.parameters()}, "a parameter is in no block"
    order = {id(p): i for i, p in enumerate(model.parameters())}
    firsts = [min(order[id(p)] for p in b.parameters()) for b in blocks]
    assert firsts == sorted(firsts), "blocks not ordered shallow to deep"
    named = dict(model.named_parameters())
    assert any(p is named[stem] for p in blocks[0].parameters())
    assert any(p is named[head] for p in blocks[-1].parameters())


def test_resnet_blocks_are_the_residual_blocks(built):
    model = built["resnet18_cifar"]
    blocks = M.blocks_of(model)
    assert blocks[1:-1] == [b for layer in (model.layer1, model.layer2, model.layer3, model.layer4) for b in layer]
    assert blocks[-1] is model.fc


def test_unknown_model_names_close_matches():
    with pytest.raises(ValueError, match="resnet18_cifar") as err:
        M.create_model("resnet18_cfar", 10)
    assert "uebench list models" in str(err.value) and "\n" not in str(err.value)


def test_no_pretrained_weights():
    with pytest.raises(ValueError, match="pretrained"):
        timm.create_model("convnet_cifar", pretrained=True)


def test_plugins_loaded_once(monkeypatch):
    loads = []

    class FakeEntryPoint:
        def load(self):
            loads.append(1)

    monkeypatch.setattr(M.importlib.metadata, "entry_points",
                        lambda group: [FakeEntryPoint()] if group == "uebench.models" else [])
    M._load_plugins.cache_clear()
    try:
        M.create_model("convnet_cifar", 10)
        M.list_models("*cifar*")
        assert loads == [1]
    finally:
        M._load_plugins.cache_clear()


def test_img_size_reaches_timm_vit_and_is_dropped_for_convnets():
    vit = M.create_model("vit_tiny_patch16_224", 5, img_size=32, patch_size=4)
    assert vit(torch.rand(1, 3, 32, 32)).shape == (1, 5)
    assert M.create_model("resnet18", 5, img_size=32)(torch.rand(2, 3, 32, 32)).shape == (2, 5)
