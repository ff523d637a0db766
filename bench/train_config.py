"""Exploiter training settings (one pydantic model, shared by configs, attacks and benchmarks).

Defaults are the EM reference code's CIFAR-10 exploiter (``docs/algorithms/training.md``): SGD lr 0.1,
momentum 0.9, weight decay 5e-4, cosine over the epochs, batch 128, grad-norm clip 5,
random crop (pad 4) + horizontal flip. Paper scale is ``epochs: 60``; CPU configs use fewer.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from bench.schema import StrictModel


class TrainConfig(StrictModel):

    epochs: int = Field(60, ge=1, le=100_000)
    batch_size: int = Field(128, ge=2, le=1 << 20)
    lr: float = Field(0.1, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: float = Field(5e-4, ge=0, le=1)
    schedule: Literal["cosine", "onecycle", "multistep", "constant"] = "cosine"
    milestones: tuple[float, ...] = Field((0.5, 0.75), description="multistep: fractions of the epochs")
    gamma: float = Field(0.1, gt=0, le=1)
    warmup_frac: float = Field(0.2, ge=0, lt=1, description="onecycle: fraction of steps spent warming up")
    grad_clip: float | None = Field(5.0, gt=0, le=1e9, description="max grad norm (EM code: 5); null disables")
    augment: Literal["crop_flip", "flip", "none"] = "crop_flip"
    crop_padding: int = Field(4, ge=0, le=256)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    eval_every: int = Field(1, ge=1, le=100_000, description="evaluate clean test accuracy every k epochs (and the last)")
    eval_batch_size: int = Field(1024, ge=1, le=1 << 20)
    amp: bool = Field(True, description="mixed precision on CUDA (ignored on CPU)")
    channels_last: bool | None = Field(None, description="null: on for CUDA, off on CPU")
    compile: bool = Field(False, description="torch.compile the model (pays off on long GPU runs)")

    @field_validator("milestones")
    @classmethod
    def _fractions(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if any(not 0 < m <= 1 for m in v):
            raise ValueError(f"milestones are fractions of the epochs in (0, 1], got {list(v)}")
        return v


class RobustEvalConfig(StrictModel):
    """Robust accuracy of the trained exploiter on the clean test set (Going Grayscale Table 7).

    Defaults follow ``docs/algorithms/training.md``: FGSM at 8/255; PGD-20 at 8/255 with step 0.8/255
    (the reference code's 0.003 is 0.77/255) and a uniform random start. ``n_test`` evaluates a stratified subset (null: all).
    """

    fgsm: bool = True
    pgd: bool = True
    epsilon: float = Field(8.0, gt=0, le=255, description="/255 units")
    pgd_steps: int = Field(20, ge=1, le=10_000)
    pgd_step_size: float = Field(0.8, gt=0, le=255, description="/255 units")
    n_test: int | None = Field(1000, ge=1, le=10**9)
