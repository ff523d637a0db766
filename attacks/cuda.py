"""``cuda``: convolution-based unlearnable datasets (Sadasivan, Soltanolkotabi, Feizi, CVPR 2023,
"CUDA: Convolution-based Unlearnable Datasets"), training-free (``docs/algorithms/model_free.md``).

Written from the paper's description (the reference code's licence forbids copying it). Every
class gets one random k×k filter: its taps are drawn uniformly from [0, pb] (pb, the "blur
parameter", is ``blur``), then one tap, chosen uniformly at random, is set to 1. The filter is
the same on all three channels. Every image of the class is convolved with it (zero padding,
same size) and divided by its own maximum, so it lies in [0, 1] again.

This attack only *draws* the filters: it returns a `FilterPerturbation`, and the harness runs
the convolution, normalization and quantization itself and validates the kernels against the
``filter`` threat model (peak tap 1, every other tap at most ``blur``, side at most
``kernel_size``). The result is not additive-L∞-bounded; the row still reports the measured
L∞, L2 and PSNR of the change.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from bench.api import ATTACKS, Attack, AttackContext, ThreatModel, lazy_import
from bench.perturbation import FilterPerturbation

torch = lazy_import("torch")


class CUDAParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    blur: float = Field(0.3, ge=0, le=1, description="pb: off-peak taps are drawn from U[0, pb] (paper and code, CIFAR: 0.3)")
    kernel_size: int = Field(3, ge=1, le=15, description="k, odd: side of each class's filter (paper and code: 3)")
    normalize: Literal["max", "sum", "clip"] = Field(
        "max", description="how a filtered image returns to [0, 1]: max (paper and code: divide by the image's maximum), sum, clip"
    )
    kernel_rng: Literal["reference", "torch"] = Field(
        "reference",
        description="reference: numpy's RandomState(seed) drawn in the code's order (its filters for --seed); torch: a torch generator of the cell's seed",
    )

    @field_validator("kernel_size")
    @classmethod
    def _odd(cls, v: int) -> int:
        if v % 2 == 0:
            raise ValueError(f"kernel_size must be odd (the image keeps its size), got {v}")
        return v


def draw_kernels(num_classes: int, k: int, blur: float, seed: int, rng: str = "reference") -> tuple["torch.Tensor", list[int]]:
    """(K, k, k) float32 filters and, per class, the flat index of the tap set to 1.

    ``reference`` follows the draw order of the reference code for seed ``seed``: per class,
    3·k·k uniforms on [0, blur) (one k×k block per channel, of which only the first is used:
    the filter is the same on every channel), then the row and the column of the peak tap."""
    kernels, peaks = torch.empty((num_classes, k, k)), []
    if rng == "reference":
        import numpy as np

        state = np.random.RandomState(seed % 2**32)
        for cls in range(num_classes):
            block = state.uniform(0.0, blur, size=(3, k, k))[0]
            row, col = int(state.randint(k)), int(state.randint(k))
            kernels[cls] = torch.from_numpy(block)
            peaks.append(row * k + col)
    else:
        gen = torch.Generator().manual_seed(seed)
        kernels = torch.rand((num_classes, k, k), generator=gen) * blur
        peaks = torch.randint(0, k * k, (num_classes,), generator=gen).tolist()
    flat = kernels.view(num_classes, -1)
    flat[torch.arange(num_classes), torch.tensor(peaks)] = 1.0
    return kernels.float().contiguous(), peaks


@ATTACKS.register(
    "cuda",
    params=CUDAParams,
    description="Class-wise random convolutions (one k×k filter per class, taps U[0, pb], one set to 1), image / its max",
    reference="Sadasivan, Soltanolkotabi, Feizi CVPR 2023; vinusankars/Convolution-based-Unlearnability (implemented from the paper)",
    threat=ThreatModel("filter", "blur"),
    category="training-free",
)
class ConvolutionUnlearnable(Attack):
    def generate(self, train, ctx: AttackContext) -> FilterPerturbation:
        p: CUDAParams = self.params
        kernels, peaks = draw_kernels(train.num_classes, p.kernel_size, p.blur, ctx.seed, p.kernel_rng)
        off = kernels.flatten(1).clone()
        off[torch.arange(len(peaks)), torch.tensor(peaks)] = 0.0
        stats = {"peak_taps": peaks, "max_off_peak": round(float(off.max()), 6), "kernel_rng": p.kernel_rng}
        return FilterPerturbation(kernels, mode="class", normalize=p.normalize, stats=stats)
