"""Batch augmentations: ``mixup``, ``cutout``, ``cutmix``, ``color`` (``docs/algorithms/augmentations.md``).

They run per batch after the trainer's crop/flip, on the device, with randomness drawn per
image. ``mixup`` and ``cutmix`` return soft labels (B, K) that the trainer's cross-entropy
takes as probabilities; train accuracy is still counted against the hard label.

Defaults follow the EM code (``dataset.py``), whose numbers EM Table 3 and Going Grayscale
Table 1 report: ``MixUp``/``CutMix`` make ``num_mix = 2`` rounds, each applied with
probability 0.5 and λ ~ Beta(1, 1); CutMix's label weight is the pasted box's true area
fraction; ``Cutout(16)`` zeroes one 16×16 square (clipped at the border) on every image. In
the EM code the partner image is a random sample of the dataset; here it is a random image
of the same batch (a permutation), which draws from the same distribution without a second
data load. A round mixes the current (possibly already mixed) image with the partner's
original, as the EM code mixes with a fresh sample. Zhang et al.'s mixup is
``{prob: 1, num_mix: 1}``. The EM code's ``MixUp`` first blended ``img2 * (1 - img2)``
(commit 23fa9d6, fixed in 8c92c8a); this is the fixed ``(1 - λ)`` form.

``color`` is the ST paper's CG augmentation: ``RandomApply(ColorJitter, p=0.8)`` then
``RandomGrayscale(p=0.2)``. The paper lost the jitter strengths; the defaults are the
SimCLR values of the work it cites (0.4, 0.4, 0.4, 0.1).
"""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from bench.api import DEFENSES, Defense, lazy_import
from defenses.color_ops import random_color_jitter, random_grayscale

torch = lazy_import("torch")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def soft_labels(y: "torch.Tensor", num_classes: int) -> "torch.Tensor":
    """(B, K) float targets from hard labels; soft targets pass through."""
    return y if y.ndim == 2 else torch.nn.functional.one_hot(y, num_classes).float()


def _beta(alpha: float, n: int, like: "torch.Tensor") -> "torch.Tensor":
    """n draws of Beta(α, α) on ``like``'s device (torch's global generator: seeded per cell)."""
    a = torch.full((n,), float(alpha), device=like.device)
    return torch.distributions.Beta(a, a).sample()


class _Batch(Defense):
    num_classes: int | None = None

    def setup(self, model, train, num_classes):
        self.num_classes = num_classes

    def _soft(self, y):
        if self.num_classes is None:
            raise RuntimeError(f"{type(self).__name__}: setup() must run before batch_transform (the trainer calls it)")
        return soft_labels(y, self.num_classes)


# --------------------------------------------------------------------------- mixup
class MixupParams(_Strict):
    alpha: float = Field(1.0, gt=0, description="λ ~ Beta(α, α)")
    prob: float = Field(0.5, ge=0, le=1, description="chance that a round mixes an image (EM code: 0.5)")
    num_mix: int = Field(2, ge=1, description="mixing rounds per image (EM code: 2)")


def mix(x, y_soft, x_partner, y_partner, lam):
    """λ·x + (1 − λ)·partner for images and targets, λ per image."""
    lam_x = lam.view(-1, 1, 1, 1)
    return lam_x * x + (1 - lam_x) * x_partner, lam.view(-1, 1) * y_soft + (1 - lam.view(-1, 1)) * y_partner


@DEFENSES.register(
    "mixup",
    params=MixupParams,
    description="Mixup with soft labels (EM code: 2 rounds, p 0.5, λ ~ Beta(1, 1))",
    reference="Zhang et al. ICLR 2018; EM code dataset.py MixUp; EM Table 3, Going Grayscale Table 1",
    category="augmentation",
    cost="elementwise ops per batch",
)
class Mixup(_Batch):
    def batch_transform(self, x, y, g):
        p, n = self.params, x.shape[0]
        x0, y0 = x, self._soft(y)
        y_out = y0
        for _ in range(p.num_mix):
            perm = torch.randperm(n, device=x.device, generator=g)
            on = torch.rand(n, device=x.device, generator=g) < p.prob
            lam = torch.where(on, _beta(p.alpha, n, x), torch.ones(n, device=x.device))
            x, y_out = mix(x, y_out, x0[perm], y0[perm], lam)
        return x, y_out


# --------------------------------------------------------------------------- cutout / cutmix boxes
def random_boxes(n: int, h: int, w: int, box_h: "torch.Tensor", box_w: "torch.Tensor", g, device) -> "torch.Tensor":
    """(n, 1, h, w) boolean masks of boxes centred uniformly in the image and clipped at its
    border, as the reference ``Cutout``/``rand_bbox``: rows [cy − bh//2, cy + bh//2)."""
    cy = torch.randint(0, h, (n,), device=device, generator=g)
    cx = torch.randint(0, w, (n,), device=device, generator=g)
    y1, y2 = (cy - box_h // 2).clamp(0, h), (cy + box_h // 2).clamp(0, h)
    x1, x2 = (cx - box_w // 2).clamp(0, w), (cx + box_w // 2).clamp(0, w)
    rows = torch.arange(h, device=device).view(1, h, 1)
    cols = torch.arange(w, device=device).view(1, 1, w)
    inside = (rows >= y1.view(-1, 1, 1)) & (rows < y2.view(-1, 1, 1)) & (cols >= x1.view(-1, 1, 1)) & (cols < x2.view(-1, 1, 1))
    return inside.unsqueeze(1)


class CutoutParams(_Strict):
    size: int = Field(16, ge=1, description="side of the zeroed square (EM code: 16)")


@DEFENSES.register(
    "cutout",
    params=CutoutParams,
    description="Cutout: zero one 16×16 square per image",
    reference="DeVries & Taylor 2017; EM code dataset.py Cutout(16); EM Table 3",
    category="augmentation",
    cost="elementwise ops per batch",
)
class Cutout(_Batch):
    def batch_transform(self, x, y, g):
        n, _, h, w = x.shape
        side = torch.full((n,), self.params.size, device=x.device)
        box = random_boxes(n, h, w, side, side, g, x.device)
        return x.masked_fill(box, 0.0), y


class CutmixParams(_Strict):
    alpha: float = Field(1.0, gt=0, description="λ ~ Beta(α, α) (EM code's beta: 1)")
    prob: float = Field(0.5, ge=0, le=1, description="chance that a round pastes a box (EM code: 0.5)")
    num_mix: int = Field(2, ge=1, description="rounds per image (EM code: 2)")


@DEFENSES.register(
    "cutmix",
    params=CutmixParams,
    description="CutMix with area-weighted soft labels (EM code: 2 rounds, p 0.5, Beta(1, 1))",
    reference="Yun et al. ICCV 2019; EM code dataset.py CutMix; EM Table 3",
    category="augmentation",
    cost="elementwise ops per batch",
)
class Cutmix(_Batch):
    def batch_transform(self, x, y, g):
        p = self.params
        n, _, h, w = x.shape
        x0, y0 = x, self._soft(y)
        y_out = y0
        for _ in range(p.num_mix):
            perm = torch.randperm(n, device=x.device, generator=g)
            on = torch.rand(n, device=x.device, generator=g) < p.prob
            cut = torch.sqrt(1 - _beta(p.alpha, n, x))
            box = random_boxes(n, h, w, (h * cut).long(), (w * cut).long(), g, x.device)
            box &= on.view(-1, 1, 1, 1)
            x = torch.where(box, x0[perm], x)
            kept = 1 - box.flatten(1).float().mean(1)  # λ = 1 − box area / image area
            y_out = kept.view(-1, 1) * y_out + (1 - kept.view(-1, 1)) * y0[perm]
        return x, y_out


# --------------------------------------------------------------------------- colour (CG)
class ColorParams(_Strict):
    jitter_p: float = Field(0.8, ge=0, le=1, description="chance of colour jitter per image")
    brightness: float = Field(0.4, ge=0)
    contrast: float = Field(0.4, ge=0)
    saturation: float = Field(0.4, ge=0)
    hue: float = Field(0.1, ge=0, le=0.5)
    gray_p: float = Field(0.2, ge=0, le=1, description="chance of grayscale per image")


def color_augment(x, g, p: ColorParams):
    """The CG augmentation: per-image colour jitter with probability jitter_p, then grayscale with gray_p."""
    x = random_color_jitter(x, g, (p.brightness, p.contrast, p.saturation, p.hue), p.jitter_p)
    return random_grayscale(x, g, p.gray_p)


@DEFENSES.register(
    "color",
    params=ColorParams,
    description="CG: colour jitter (p 0.8; 0.4/0.4/0.4/0.1) then random grayscale (p 0.2)",
    reference="Dang et al. 2023 (ST) §IV-A4, Table IX (NT-CG)",
    category="augmentation",
    cost="elementwise ops per batch",
)
class Color(Defense):
    def batch_transform(self, x, y, g):
        return color_augment(x, g, self.params), y
