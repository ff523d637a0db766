"""The source model an attack optimizes against, built and trained with the project's own
building blocks (`AttackContext.make_model`, `bench.trainer`), so a poison's source is made
exactly as an exploiter is, and any registered architecture (``mlp`` included) can be one.

`SourceParams` is the params mix-in of every attack with a source model (which model, how it
runs); `train_on_clean` trains one on the clean data with the exploiter's own engine (the
fixed source of error-maximizing noise, TAP and hypocritical perturbations); `frozen` puts
one in eval mode with its parameters' gradients off while PGD runs on the input.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from bench.train_config import TrainConfig
from registry.lazy import lazy_import

if TYPE_CHECKING:
    import torch

    from bench.attack import AttackContext
    from bench.data import ImageData
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

    def model_refs(self) -> list[tuple[str, str, dict]]:
        """The models these params name (checked before a run starts, see `bench.preflight`)."""
        field = "source_model_kwargs" if self.source_model_kwargs else "source_arch"
        return [(field, self.source_arch, dict(self.source_model_kwargs))]

    def use_channels_last(self, device: "torch.device") -> bool:
        return self.channels_last if self.channels_last is not None else device.type == "cuda"

    def build_source(self, ctx: "AttackContext") -> "torch.nn.Module":
        model = ctx.make_model(self.source_arch, **self.source_model_kwargs)
        if self.use_channels_last(ctx.device):
            model = model.to(memory_format=torch.channels_last)
        return model


class CleanSourceParams(SourceParams):
    """A source trained once on the clean data, then fixed (error-max, TAP, HYPO)."""

    source_train: TrainConfig = Field(
        default_factory=TrainConfig, description="how the source is trained on clean data first (default: the EM code's 60-epoch recipe)"
    )


def train_on_clean(p: CleanSourceParams, train: "ImageData", ctx: "AttackContext") -> tuple["torch.nn.Module", dict]:
    """The source model of ``p`` trained on the clean ``train`` by `bench.trainer.fit`; returns
    (model, stats) with its training time and its accuracy on a stratified train slice."""
    from bench.data import stratified_indices
    from bench.trainer import fit

    t0 = time.perf_counter()
    model = p.build_source(ctx)
    cfg = p.source_train.model_copy(update={"eval_every": p.source_train.epochs})
    probe = train.subset(stratified_indices(train.y, min(len(train), 2048), 0))  # fit reports accuracy on a train slice
    res = fit(model, train, probe, cfg, seed=ctx.seed, device=ctx.device)
    seconds = time.perf_counter() - t0
    ctx.log.info("source %s trained on clean data, train accuracy %.4f", p.source_arch, res.clean_acc_final)
    return model, {"source_train_seconds": round(seconds, 2), "source_train_acc": round(res.clean_acc_final, 4)}


class frozen:
    """Context: the model in eval mode with ``requires_grad`` off, so PGD computes only the
    input gradient; restores both on exit."""

    def __init__(self, model: "torch.nn.Module"):
        self.model = model

    def __enter__(self) -> "torch.nn.Module":
        self._training = self.model.training
        self._grads = [p.requires_grad for p in self.model.parameters()]
        self.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        return self.model

    def __exit__(self, *exc) -> None:
        for p, g in zip(self.model.parameters(), self._grads):
            p.requires_grad_(g)
        self.model.train(self._training)


def mean_loss_and_acc(model: "torch.nn.Module", batches, amp: bool, channels_last: bool) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` (eval mode) over ``(float x, y)`` batches."""
    from bench.device import autocast_for

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
