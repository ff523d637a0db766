"""The source model an attack optimizes against, built and trained with the project's own
building blocks (`AttackContext.make_model`, `bench.trainer`), so a poison's source is made
exactly as an exploiter is, and any registered architecture (``mlp`` included) can be one.

Params shared by every optimization-based attack live here as pydantic mix-ins:
`SourceParams` (which model, how it runs) and `PGDParams` (the budget and the PGD on δ),
with the mode-dependent defaults of the reference scripts filled in at validation time, so
the recorded params always show the values actually used.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from registry.lazy import lazy_import

if TYPE_CHECKING:
    import torch

    from bench.attack import AttackContext
else:
    torch = lazy_import("torch")


class SourceParams(BaseModel):
    """Which model the poison is optimized on and how it runs on the device."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source_arch: str = Field(
        "resnet18_cifar", description="source model: any registered (timm) model, e.g. resnet18_cifar, convnet_cifar, mlp"
    )
    source_model_kwargs: dict[str, Any] = Field(
        {}, description="extra constructor kwargs of the source model, e.g. {sigmoid_output: true} for the Going Grayscale MLP"
    )
    amp: bool = Field(True, description="mixed precision for the source model on CUDA (ignored on CPU)")
    channels_last: bool | None = Field(None, description="channels-last tensors for conv sources; null: on for CUDA only")

    def use_channels_last(self, device: "torch.device") -> bool:
        return self.channels_last if self.channels_last is not None else device.type == "cuda"

    def build_source(self, ctx: "AttackContext") -> "torch.nn.Module":
        model = ctx.make_model(self.source_arch, **self.source_model_kwargs)
        if self.use_channels_last(ctx.device):
            model = model.to(memory_format=torch.channels_last)
        return model


class PGDParams(BaseModel):
    """The L∞ budget, the signed PGD on δ and what it is computed over.

    ``pgd_steps`` and ``step_size`` default by mode (the EM scripts: 20 sample-wise, 1
    class-wise; ε/10); subclasses add their own mode-dependent defaults in ``_BY_MODE``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    _BY_MODE: ClassVar[dict[str, dict[str, Any]]] = {"pgd_steps": {"sample": 20, "class": 1}}

    mode: Literal["sample", "class"] = Field("sample", description="sample-wise δ (N×C×H×W) or class-wise δ (K×C×H×W)")
    epsilon: float = Field(8.0, gt=0, le=255, description="L∞ budget in /255 units")
    pgd_steps: int = Field(20, ge=1, description="PGD steps T per pass (default: 20 sample-wise, 1 class-wise)")
    step_size: float = Field(0.8, gt=0, description="PGD step α in /255 units (default: ε/10)")
    batch_size: int = Field(512, ge=2, description="batch size of the source model's steps and of the PGD passes")
    subset_fraction: float = Field(
        0.2, gt=0, le=1, description="class-wise only: the stratified share of the train set PGD and the stop test run on"
    )
    subset_seed: int = Field(0, ge=0, description="class-wise only: seed of the stratified subset (code: 0)")

    @model_validator(mode="before")
    @classmethod
    def _mode_defaults(cls, data: Any) -> Any:
        """Fill the fields left unset with their defaults for the chosen mode and ε."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        mode = data.get("mode", cls.model_fields["mode"].default)
        for name, by_mode in cls._BY_MODE.items():
            if name not in data and mode in by_mode:
                data[name] = by_mode[mode]
        eps = data.get("epsilon", cls.model_fields["epsilon"].default)
        if "step_size" not in data and isinstance(eps, (int, float)) and not isinstance(eps, bool):
            data["step_size"] = eps / 10
        return data


def mean_loss_and_acc(
    model: "torch.nn.Module", batches, amp: bool, channels_last: bool
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` (eval mode) over ``(float x, y)`` batches."""
    from bench.trainer import autocast_for

    was = model.training
    model.eval()
    loss = torch.zeros((), dtype=torch.float64)
    correct, n = 0, 0
    with torch.inference_mode():
        for xb, yb in batches:
            if channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            with autocast_for(xb.device, amp):
                logits = model(xb).float()
            loss += torch.nn.functional.cross_entropy(logits, yb, reduction="sum").double().cpu()
            correct += int((logits.argmax(1) == yb).sum())
            n += len(yb)
    model.train(was)
    return float(loss) / max(1, n), correct / max(1, n)
