"""Input filters: ``grayscale``, ``bdr``, ``jpeg``, ``gaussian`` (``docs/algorithms/filters.md``).

Each filter maps every uint8 image to a new uint8 image, deterministically and per image.
The reference pipelines apply them per batch with PIL: Going Grayscale after crop/flip, ISS
before. A per-pixel filter (grayscale, BDR) commutes with crop and flip exactly (the crop's
zero padding is a fixed point of both), so filtering the whole set once, on the device,
before training (``transform_train``) is the same as either reference pipeline for those
two, and costs one pass instead of one per epoch. JPEG and blur act on neighbourhoods; for
them this is the ISS order (filter, then crop/flip).

``apply_to_test`` says whether the clean test set goes through the same filter: Going
Grayscale grays the test set too (default for ``grayscale``); ISS filters the train set
only (default for ``bdr``, ``jpeg`` and ``gaussian``; ``--ISS_both_train_test`` flips it).
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from bench.api import DEFENSES, Defense, lazy_import
from bench.color import gray3_uint8

torch = lazy_import("torch")


class _FilterParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    apply_to_test: bool = Field(False, description="also filter the clean test images")


class _Filter(Defense):
    """A defense that filters train (and optionally test) images once before training."""

    def filter(self, x: "torch.Tensor") -> "torch.Tensor":
        raise NotImplementedError

    def transform_train(self, x):
        return self.filter(x)

    def transform_test(self, x):
        return self.filter(x) if self.params.apply_to_test else x


# --------------------------------------------------------------------------- grayscale
class GrayscaleParams(_FilterParams):
    apply_to_test: bool = Field(True, description="gray the test set too (Going Grayscale); false = ISS")


@DEFENSES.register(
    "grayscale",
    params=GrayscaleParams,
    description="Gray3: ITU-R 601 luma copied to 3 channels, train and test (ISS: train only)",
    reference="Liu et al. 2021 (Going Grayscale) dataset.py CIFAR10GRAY; ISS augmentations.py",
    category="filter",
    cost="one pass over the data before training",
)
class Grayscale(_Filter):
    def filter(self, x):
        return gray3_uint8(x)


# --------------------------------------------------------------------------- bit-depth reduction
def posterize(x: "torch.Tensor", bits: int) -> "torch.Tensor":
    """Keep the top ``bits`` bits: floor(v / 2^(8-b)) · 2^(8-b) (PIL/torchvision posterize, as ISS)."""
    return x & ((0xFF << (8 - bits)) & 0xFF)


def round_bits(x: "torch.Tensor", bits: int) -> "torch.Tensor":
    """Xu et al.'s feature squeezing: round(v · (2^b − 1)) / (2^b − 1) on [0, 1], back to uint8."""
    levels = 2**bits - 1
    q = torch.round(x.float() / 255.0 * levels) / levels
    return torch.round(q * 255.0).to(torch.uint8)


_BDR = {"posterize": posterize, "round": round_bits}


class BDRParams(_FilterParams):
    bits: int = Field(2, ge=1, le=7, description="bits kept per channel (Going Grayscale: 2, 4, 6)")
    method: Literal[tuple(_BDR)] = Field("posterize", description="posterize (ISS) | round (Xu et al.)")


@DEFENSES.register(
    "bdr",
    params=BDRParams,
    description="Bit-depth reduction to `bits` bits (posterize; Xu et al.'s rounding by option)",
    reference="Xu et al. NDSS 2018 (feature squeezing); Going Grayscale Table 8; ISS augmentations.py",
    category="filter",
    cost="one pass over the data before training",
)
class BitDepthReduction(_Filter):
    def filter(self, x):
        return _BDR[self.params.method](x, self.params.bits)


# --------------------------------------------------------------------------- JPEG
def jpeg(x: "torch.Tensor", quality: int) -> "torch.Tensor":
    """JPEG-compress and decode every image with libjpeg (torchvision.io), same shape and dtype.

    torchvision's encoder takes the whole list of images in one call; the data makes one
    round trip to host memory (CPU libjpeg, as PIL in the ISS code).
    """
    import warnings

    from torchvision.io import ImageReadMode, decode_jpeg, encode_jpeg

    with warnings.catch_warnings():  # torchvision 0.29 points to torchcodec; these calls still work
        warnings.simplefilter("ignore", DeprecationWarning)
        coded = encode_jpeg(list(x.cpu()), quality=quality)
        out = torch.stack(decode_jpeg(coded, mode=ImageReadMode.UNCHANGED))
    return out.to(x.device)


class JPEGParams(_FilterParams):
    quality: int = Field(10, ge=1, le=100, description="JPEG quality (ISS: 10)")


@DEFENSES.register(
    "jpeg",
    params=JPEGParams,
    description="JPEG compression at `quality` (default 10), train images only by default",
    reference="Liu et al. 2023 (ISS) augmentations.py; UEraser's JPEG-10 variant",
    category="filter",
    cost="one pass over the data before training",
)
class JPEG(_Filter):
    def filter(self, x):
        return jpeg(x, self.params.quality)


# --------------------------------------------------------------------------- Gaussian blur
def gaussian_blur(x: "torch.Tensor", kernel_size: int, sigma: float) -> "torch.Tensor":
    """Gaussian blur of uint8 images (torchvision's kernel, reflect padding), rounded back to uint8."""
    from torchvision.transforms.v2 import functional as F

    out = F.gaussian_blur(x.float(), [kernel_size, kernel_size], [sigma, sigma])
    return out.round_().clamp_(0, 255).to(torch.uint8)


class GaussianParams(_FilterParams):
    kernel_size: int = Field(3, ge=3, description="odd kernel side")
    sigma: float = Field(0.1, gt=0, le=100, description="standard deviation in pixels (APBench: 0.1)")

    @field_validator("kernel_size")
    @classmethod
    def _odd(cls, v: int) -> int:
        if v % 2 == 0:
            raise ValueError(f"must be odd, e.g. {v + 1}")
        return v


@DEFENSES.register(
    "gaussian",
    params=GaussianParams,
    description="Gaussian blur (kernel 3, σ 0.1 as APBench), train images only by default",
    reference="APBench (lafeat/apbench) util.py aug_train; in the family of Xu et al. feature squeezing",
    category="filter",
    cost="one pass over the data before training",
)
class GaussianBlur(_Filter):
    def filter(self, x):
        return gaussian_blur(x, self.params.kernel_size, self.params.sigma)
