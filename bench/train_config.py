"""Exploiter training settings (one pydantic model, shared by configs, attacks and benchmarks).

Defaults are the EM reference code's CIFAR-10 exploiter (algorithms.md §1.6): SGD lr 0.1,
momentum 0.9, weight decay 5e-4, cosine over the epochs, batch 128, grad-norm clip 5,
random crop (pad 4) + horizontal flip. Paper scale is ``epochs: 60``; CPU configs use fewer.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: int = Field(60, ge=1)
    batch_size: int = Field(128, ge=2)
    lr: float = Field(0.1, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: float = Field(5e-4, ge=0)
    schedule: Literal["cosine", "onecycle", "multistep", "constant"] = "cosine"
    milestones: tuple[float, ...] = Field((0.5, 0.75), description="multistep: fractions of the epochs")
    gamma: float = Field(0.1, gt=0, le=1)
    warmup_frac: float = Field(0.2, ge=0, lt=1, description="onecycle: fraction of steps spent warming up")
    grad_clip: float | None = Field(5.0, gt=0, description="max grad norm (EM code: 5); null disables")
    augment: Literal["crop_flip", "flip", "none"] = "crop_flip"
    crop_padding: int = Field(4, ge=0)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    eval_every: int = Field(1, ge=1, description="evaluate clean test accuracy every k epochs (and the last)")
    eval_batch_size: int = Field(1024, ge=1)
    amp: bool = Field(True, description="mixed precision on CUDA (ignored on CPU)")
    channels_last: bool | None = Field(None, description="null: on for CUDA, off on CPU")
    compile: bool = Field(False, description="torch.compile the model (pays off on long GPU runs)")


class RobustEvalConfig(BaseModel):
    """Robust accuracy of the trained exploiter on the clean test set (Going Grayscale Table 7).

    Defaults follow algorithms.md §2.4: FGSM at 8/255; PGD-20 at 8/255 with step 0.8/255
    (0.003) and a uniform random start. ``n_test`` evaluates a stratified subset (null: all).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    fgsm: bool = True
    pgd: bool = True
    epsilon: float = Field(8.0, gt=0, le=255, description="/255 units")
    pgd_steps: int = Field(20, ge=1)
    pgd_step_size: float = Field(0.8, gt=0, description="/255 units")
    n_test: int | None = Field(1000, ge=1)
