"""CIFAR models, registered into timm's own model registry.

Why timm's registry: stock timm models (ViT, ConvNeXt, ...) and the CIFAR variants of the
papers are then created, listed and inspected the same way, and a third-party package adds
a model by calling ``timm.models.register_model`` in a module named by the ``uebench.models``
entry-point group. So ``timm.create_model("resnet18_cifar")`` works once this module is
imported, and `create_model` below is a thin wrapper that also loads plugins.

The variants follow the EM and Going Grayscale reference code (``docs/algorithms/training.md``):
3x3 stride-1 stems without max-pool (an ImageNet stem shrinks 32x32 to 8x8 before the first
stage), inputs in [0, 1] and no normalization layer anywhere.

Our own modules expose timm's small model interface (``num_classes``, ``num_features``,
``get_classifier``, ``reset_classifier``, ``group_matcher``), so `classifier_of` and
`blocks_of` treat them exactly like stock timm models.
"""
from __future__ import annotations

import difflib
import functools
import importlib.metadata
import inspect

import timm
import torch
from timm.models import group_parameters, model_entrypoint, register_model
from torch import nn

from registry.core import RegistryError

__all__ = ["blocks_of", "classifier_of", "create_model", "list_models"]

# Bookkeeping kwargs timm.create_model hands every entrypoint; our modules do not take them.
_TIMM_ONLY = ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")


# --------------------------------------------------------------------------- building blocks
def _conv_bn(cin: int, cout: int, bias: bool = False) -> nn.Sequential:
    """conv3x3-BN-ReLU, the unit of VGG and of the small convnet."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=bias), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def _linear(cin: int, num_classes: int) -> nn.Module:
    """timm's convention: ``num_classes=0`` means no classifier (features out)."""
    return nn.Linear(cin, num_classes) if num_classes > 0 else nn.Identity()


class _Net(nn.Module):
    """stem → blocks → pool (to (N, num_features)) → fc, with timm's classifier interface.

    One naming scheme (``stem``, ``blocks.<i>``, ``fc``) for all our models gives one
    ``group_matcher``: a group per block, the stem first, whatever else (final BN, fc) last.
    """

    stem: nn.Module
    blocks: nn.Sequential
    pool: nn.Module
    fc: nn.Module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.blocks(self.stem(x))))

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes, self.fc = num_classes, _linear(self.num_features, num_classes)

    def group_matcher(self, coarse: bool = False) -> dict:
        return dict(stem=r"^stem", blocks=r"^blocks\.(\d+)")

    def _finish(self, num_features: int, num_classes: int) -> None:
        self.num_features, self.num_classes = num_features, num_classes
        self.fc = _linear(num_features, num_classes)


_VGG_CFGS = {
    11: (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    16: (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
}


class VGG(_Net):
    """CIFAR VGG of the reference code: conv3x3(+bias)-BN-ReLU units, five 2x2 max-pools take
    32x32 to 1x1, flatten, Linear(512, K). 9.23 M params for VGG-11 (timm's ImageNet VGG has
    a 7x7-conv MLP head and 129 M at 32x32). Each block is one conv unit (a following pool
    rides along), so per-layer learning rates see every conv."""

    def __init__(self, depth: int = 11, num_classes: int = 10, in_chans: int = 3):
        super().__init__()
        blocks: list[nn.Module] = []
        c = in_chans
        for v in _VGG_CFGS[depth]:
            if v == "M":
                blocks[-1].append(nn.MaxPool2d(2))
            else:
                blocks.append(_conv_bn(c, v, bias=True))
                c = v
        self.stem, self.blocks, self.pool = nn.Identity(), nn.Sequential(*blocks), nn.Flatten(1)
        self._finish(c, num_classes)


class MLP(_Net):
    """Going Grayscale's MLP source model: flatten, 256, 128, K. ``sigmoid_output`` squashes the
    logits before the loss as that code does (an odd choice, kept for reproduction)."""

    def __init__(self, num_classes: int = 10, in_chans: int = 3, img_size: int = 32, sigmoid_output: bool = False):
        super().__init__()
        dims = (in_chans * img_size * img_size, 256, 128)
        # flatten(1), not view: works on channels_last (non-contiguous) input too.
        self.stem, self.pool = nn.Flatten(1), nn.Identity()
        self.blocks = nn.Sequential(*(nn.Sequential(nn.Linear(a, b), nn.ReLU(inplace=True)) for a, b in zip(dims, dims[1:])))
        self.sigmoid_output = sigmoid_output
        self._finish(dims[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        return out.sigmoid() if self.sigmoid_output else out


class _WideBlock(nn.Module):
    """Pre-activation wide basic block: BN-ReLU-conv3x3-BN-ReLU-dropout-conv3x3. When the shape
    changes, the shortcut is a 1x1 conv of the pre-activated input."""

    def __init__(self, cin: int, cout: int, stride: int, drop_rate: float):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(cout), nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.drop = nn.Dropout(drop_rate)
        self.shortcut = nn.Conv2d(cin, cout, 1, stride, bias=False) if (cin, stride) != (cout, 1) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.relu(self.bn1(x))
        out = self.conv2(self.drop(torch.relu(self.bn2(self.conv1(a)))))
        return out + (x if self.shortcut is None else self.shortcut(a))


class WideResNet(_Net):
    """WRN-depth-k (Zagoruyko & Komodakis 2016), the adversarial-training standard: a 16-ch
    stem, three stages of (depth-4)/6 blocks at 16k/32k/64k channels, strides 1/2/2, then
    BN-ReLU, global average pool and Linear. timm has no WRN-28-10 or WRN-34-10."""

    def __init__(self, depth: int = 28, widen_factor: int = 10, num_classes: int = 10, in_chans: int = 3,
                 drop_rate: float = 0.0):
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WideResNet depth must be 6n+4, got {depth}")
        n, widths = (depth - 4) // 6, [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.stem = nn.Conv2d(in_chans, widths[0], 3, 1, 1, bias=False)
        self.blocks = nn.Sequential(*(
            _WideBlock(widths[s] if i == 0 else widths[s + 1], widths[s + 1], (1, 2, 2)[s] if i == 0 else 1, drop_rate)
            for s in range(3) for i in range(n)))
        self.pool = nn.Sequential(nn.BatchNorm2d(widths[3]), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        self._finish(widths[3], num_classes)


class ConvNet(_Net):
    """Small fast CIFAR convnet for CPU tests and benchmarks.

    conv3x3-BN-ReLU at full resolution, then three stages of conv3x3 → 2x2 max-pool → BN →
    ReLU with doubling widths, global average pool, Linear. Pooling before BN-ReLU (as airbench
    does) runs the memory-bound BN and ReLU on a quarter of the pixels: faster, and it learned
    no worse. Average (not max) global pooling learned far faster on small data. ``width=16``
    (16/32/64/128, 0.1 M params) is the widest that keeps fwd+bwd+SGD at batch 128 above
    600 images/s on 2 CPU cores; with SGD 0.05-0.1, cosine, crop+flip it reached 45-47%
    CIFAR-10 test accuracy after 8 epochs on a 2,000-image stratified slice (39-41% after 5).
    """

    def __init__(self, num_classes: int = 10, in_chans: int = 3, width: int = 16):
        super().__init__()
        w = [width, 2 * width, 4 * width, 8 * width]
        self.stem = _conv_bn(in_chans, w[0])
        self.blocks = nn.Sequential(*(
            nn.Sequential(nn.Conv2d(a, b, 3, padding=1, bias=False), nn.MaxPool2d(2), nn.BatchNorm2d(b), nn.ReLU(inplace=True))
            for a, b in zip(w, w[1:])))
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        self._finish(w[-1], num_classes)


# --------------------------------------------------------------------------- registration
def _cifar_cfg(model: nn.Module, name: str, in_chans: int, first_conv: str, classifier: str) -> nn.Module:
    """Replace the ImageNet cfg a timm model inherits (224 px, ImageNet mean/std) by the truth:
    32x32 input in [0, 1], mean 0, std 1, so timm's data helpers add no normalization."""
    model.pretrained_cfg = model.default_cfg = dict(
        architecture=name, input_size=(in_chans, 32, 32), mean=(0.0,) * in_chans, std=(1.0,) * in_chans,
        num_classes=model.num_classes, first_conv=first_conv, classifier=classifier)
    return model


def _no_weights(name: str, pretrained: bool, kwargs: dict) -> dict:
    if pretrained:
        raise ValueError(f"{name}: no pretrained weights exist (CIFAR models train from scratch)")
    return {k: v for k, v in kwargs.items() if k not in _TIMM_ONLY}


def _own(name: str, cls: type[_Net], pretrained: bool, kwargs: dict, **defaults) -> nn.Module:
    model = cls(**{**defaults, **_no_weights(name, pretrained, kwargs)})
    return _cifar_cfg(model, name, kwargs.get("in_chans", 3), "stem", "fc")


def _cifar_stem(name: str, base: str, stem: str, pool: str, classifier: str, pretrained: bool, kwargs: dict) -> nn.Module:
    """A timm ImageNet model with its stem conv swapped for conv3x3 stride 1 (same channels,
    no bias) and its stem pool for Identity: the only change the CIFAR versions make."""
    model = timm.create_model(base, pretrained=False, **_no_weights(name, pretrained, kwargs))
    conv = model.get_submodule(stem)
    model.set_submodule(stem, nn.Conv2d(conv.in_channels, conv.out_channels, 3, 1, 1, bias=False))
    model.set_submodule(pool, nn.Identity())
    return _cifar_cfg(model, name, conv.in_channels, stem, classifier)


@register_model
def resnet18_cifar(pretrained: bool = False, **kwargs) -> nn.Module:
    """EM's CIFAR ResNet-18: 11,173,962 params at 10 classes."""
    return _cifar_stem("resnet18_cifar", "resnet18", "conv1", "maxpool", "fc", pretrained, kwargs)


@register_model
def resnet50_cifar(pretrained: bool = False, **kwargs) -> nn.Module:
    return _cifar_stem("resnet50_cifar", "resnet50", "conv1", "maxpool", "fc", pretrained, kwargs)


@register_model
def densenet121_cifar(pretrained: bool = False, **kwargs) -> nn.Module:
    return _cifar_stem("densenet121_cifar", "densenet121", "features.conv0", "features.pool0", "classifier",
                       pretrained, kwargs)


@register_model
def vgg11_cifar(pretrained: bool = False, **kwargs) -> nn.Module:
    return _own("vgg11_cifar", VGG, pretrained, kwargs, depth=11)


@register_model
def vgg16_cifar(pretrained: bool = False, **kwargs) -> nn.Module:
    return _own("vgg16_cifar", VGG, pretrained, kwargs, depth=16)


@register_model
def wrn28_10(pretrained: bool = False, **kwargs) -> nn.Module:
    return _own("wrn28_10", WideResNet, pretrained, kwargs, depth=28, widen_factor=10)


@register_model
def wrn34_10(pretrained: bool = False, **kwargs) -> nn.Module:
    return _own("wrn34_10", WideResNet, pretrained, kwargs, depth=34, widen_factor=10)


@register_model
def mlp(pretrained: bool = False, img_size: int = 32, sigmoid_output: bool = False, **kwargs) -> nn.Module:
    # img_size is in the signature so that `create_model` knows to pass it.
    return _own("mlp", MLP, pretrained, kwargs, img_size=img_size, sigmoid_output=sigmoid_output)


@register_model
def mlp_gg(pretrained: bool = False, img_size: int = 32, **kwargs) -> nn.Module:
    """Going Grayscale's MLP exactly as its code trains it, sigmoid on the logits included: the
    exploiter of its Table 6 MLP row (an arch takes no kwargs in a matrix, so it has a name)."""
    return _own("mlp_gg", MLP, pretrained, kwargs, img_size=img_size, sigmoid_output=True)


@register_model
def convnet_cifar(pretrained: bool = False, **kwargs) -> nn.Module:
    return _own("convnet_cifar", ConvNet, pretrained, kwargs)


# --------------------------------------------------------------------------- public helpers
@functools.cache
def _load_plugins() -> None:
    """Import each module of the ``uebench.models`` entry-point group once; importing it runs
    its ``timm.models.register_model`` calls (timm itself reads no entry points)."""
    for ep in importlib.metadata.entry_points(group="uebench.models"):
        ep.load()


def list_models(pattern: str = "*") -> list[str]:
    """timm's model names (stock, ours and plugins') matching an fnmatch pattern."""
    _load_plugins()
    return timm.list_models(pattern)


def create_model(name: str, num_classes: int, in_chans: int = 3, img_size: int = 32, **kwargs) -> nn.Module:
    """Build any timm-registered model, untrained, for ``num_classes`` classes.

    ``img_size`` is the data's image size. It goes to entrypoints that declare it (``mlp``);
    other models are first tried with it (timm's ViT/Swin families need it at 32x32) and, if
    their constructor rejects the keyword, built without it (convnets do not care).
    """
    _load_plugins()
    arch = name.split(".", 1)[0]  # timm's "arch.tag" form
    if not timm.is_model(arch):
        close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise RegistryError(f"unknown model {name!r}{hint} (see `uebench list models`)")
    kw = dict(pretrained=False, num_classes=num_classes, in_chans=in_chans, **kwargs)
    if "img_size" in kwargs or "img_size" in inspect.signature(model_entrypoint(arch)).parameters:
        return timm.create_model(name, **{"img_size": img_size, **kw})
    try:
        return timm.create_model(name, img_size=img_size, **kw)
    except TypeError as exc:
        if "unexpected keyword argument 'img_size'" not in str(exc):
            raise
        return timm.create_model(name, **kw)


def classifier_of(model: nn.Module) -> nn.Linear:
    """The final Linear layer. A defense hooks its input to read penultimate activations."""
    head = model.get_classifier() if hasattr(model, "get_classifier") else model
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise TypeError(f"{type(model).__name__} has no Linear classifier (num_classes=0?)")
    return linears[-1]


class BlockGroup(nn.Module):
    """Several modules (and loose parameters such as a ViT's ``cls_token``) that form one block
    but are not one submodule, e.g. a ResNet stem (conv1 + bn1). It only shares parameters."""

    def __init__(self, modules: list[nn.Module], params: list[nn.Parameter]):
        super().__init__()
        self.parts, self.loose = nn.ModuleList(modules), nn.ParameterList(params)


def blocks_of(model: nn.Module) -> list[nn.Module]:
    """The model's trainable layers ordered shallow → deep at residual-block granularity, for
    per-layer learning rates (ST); every parameter belongs to exactly one returned module.

    The grouping is timm's own ``group_matcher(coarse=False)`` (stem, each block, head), which
    our models implement too. DenseNets use the coarse grouping (dense block + transition): the
    fine one has a group per dense layer, 58 of them with a few thousand weights each. Models
    without a matcher group by top-level child.
    """
    if hasattr(model, "group_matcher"):
        matcher = model.group_matcher(coarse=isinstance(model, timm.models.DenseNet))
    else:
        tops = list(dict.fromkeys(n.split(".", 1)[0] for n, _ in model.named_parameters()))
        matcher = lambda n: tops.index(n.split(".", 1)[0])
    params = dict(model.named_parameters())
    owned = {name: {f"{name}.{p}" if name else p for p, _ in m.named_parameters()} for name, m in model.named_modules()}
    blocks = []
    for _, names in sorted(group_parameters(model, matcher).items()):
        group, chosen = set(names), []
        for mname, pnames in owned.items():  # pre-order: a parent comes before its children
            if pnames and pnames <= group and not any(mname.startswith(c + ".") or not c for c in chosen):
                chosen.append(mname)
        covered = set().union(*(owned[c] for c in chosen))
        loose = [params[n] for n in names if n not in covered]
        mods = [model.get_submodule(c) for c in chosen]
        blocks.append(mods[0] if len(mods) == 1 and not loose else BlockGroup(mods, loose))
    return blocks
