"""The δ that PGD optimizes over a training set: its params, its pass, its class-wise update.

`PGDParams` is the params mix-in of every attack whose δ is found by signed PGD on a source
model (EM, error-max, TAP, HYPO, REM): the budget, the steps, sample- or class-wise.
`pgd_pass` is one pass over (a subset of) the data in fixed order with the model frozen: for
each batch it runs `bench.pgd.pgd` from the current δ and stores the result, per image
(sample-wise) or as the class mean (class-wise, EM's ``universal_perturbation``).
`RandomTransform` and `Augmented` put a fresh differentiable crop/shift + flip in front of the
model, so the PGD gradient reaches δ *through* the augmentation (TAP's ``--paugment``, REM's
expectation over transformations).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from attacks.views import fixed_batches
from registry.lazy import lazy_import

if TYPE_CHECKING:
    import torch

    from attacks.views import CleanView
    from bench.pgd import PGD
else:
    torch = lazy_import("torch")


class PGDParams(BaseModel):
    """The L∞ budget, the signed PGD on δ and what it is computed over.

    ``pgd_steps`` and ``step_size`` default by mode (the EM scripts: 20 sample-wise, 1
    class-wise; ε/10); subclasses add their own mode-dependent defaults in ``_BY_MODE`` and
    their own unset step size ε/``_STEP_DIVISOR``, so the recorded params always show the
    values actually used.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    _BY_MODE: ClassVar[dict[str, dict[str, Any]]] = {"pgd_steps": {"sample": 20, "class": 1}}
    _STEP_DIVISOR: ClassVar[float] = 10  # unset step_size = ε / this (EM: 10; HYPO: 5; TAP: 20)

    mode: Literal["sample", "class"] = Field("sample", description="sample-wise δ (N×C×H×W) or class-wise δ (K×C×H×W)")
    epsilon: float = Field(8.0, gt=0, le=255, description="L∞ budget in /255 units")
    pgd_steps: int = Field(20, ge=1, le=100_000, description="PGD steps T per pass (default: 20 sample-wise, 1 class-wise)")
    step_size: float = Field(0.8, gt=0, le=255, description="PGD step α in /255 units (default: ε/10)")
    batch_size: int = Field(512, ge=2, le=1 << 20, description="batch size of the source model's steps and of the PGD passes")
    subset_fraction: float = Field(
        0.2, gt=0, le=1, description="class-wise only: the stratified share of the train set PGD and the stop test run on"
    )
    subset_seed: int = Field(0, ge=0, le=2**32 - 1, description="class-wise only: seed of the stratified subset (code: 0)")

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
            data["step_size"] = eps / cls._STEP_DIVISOR
        return data

    def pgd_index(self, y: "torch.Tensor", k: int) -> "torch.Tensor":
        """The images PGD runs over: all (sample-wise) or a stratified subset (class-wise)."""
        from bench.data import stratified_indices

        n = len(y)
        if self.mode == "class":
            return stratified_indices(y, max(k, round(self.subset_fraction * n)), self.subset_seed).to(y.device)
        return torch.arange(n, device=y.device)


def class_mean_update(delta: "torch.Tensor", eta: "torch.Tensor", y: "torch.Tensor", epsilon: float) -> None:
    """Class-wise EM's update: for every class present in the batch, δ_k ← clip(mean of the
    batch's class-k η, −ε, ε). A running replacement by the mean, in place, no class loop."""
    k = delta.shape[0]
    sums = torch.zeros_like(delta).index_add_(0, y, eta.to(delta.dtype))
    counts = torch.bincount(y, minlength=k)
    present = counts > 0
    means = sums[present] / counts[present].view(-1, 1, 1, 1).to(delta.dtype)
    delta[present] = means.clamp(-epsilon, epsilon)


def pgd_pass(
    model: "torch.nn.Module",
    view: "CleanView",
    index: "torch.Tensor",
    y: "torch.Tensor",
    delta: "torch.Tensor",
    walk: "PGD",
    class_wise: bool,
    batch_size: int,
    loss_fn: Callable | None = None,
    targets: "torch.Tensor | None" = None,
) -> None:
    """One PGD pass over ``index`` in fixed order, updating ``delta`` in place (the model must
    be `frozen`). ``targets`` replaces the labels the loss is taken against (TAP)."""
    from bench.pgd import pgd

    labels = y if targets is None else targets
    for b in fixed_batches(len(index), batch_size, y.device):
        idx = index[b]
        start = delta[y[idx]] if class_wise else delta[idx]
        _, eta = pgd(model, view.batch(idx), labels[idx], walk, delta=start, loss_fn=loss_fn)
        if class_wise:
            class_mean_update(delta, eta, y[idx], walk.epsilon)
        else:
            delta[idx] = eta


class RandomTransform:
    """A fresh random augmentation of a float batch on every call, differentiable in the batch,
    so the gradient of a loss on T(x + δ) reaches δ (each image gets its own draw).

    ``crop``: a crop of the batch zero-padded by ``amount`` px at uniform integer offsets, as
    the exploiter's `bench.batches.crop_flip` and torchvision's ``RandomCrop(32, 4)`` (REM's
    ``trans``).
    ``shift``: a translation by a uniform sub-pixel offset in [−amount, amount] px along each
    axis, bilinear, the uncovered border filled with ``fill`` (per channel; zeros if None):
    TAP's differentiable ``RandomTransform`` (``shift=8`` on 32 px is ±4 px; its zero in the
    mean/std-normalized space is the dataset's mean colour). Either way, with ``flip`` each
    image is mirrored with probability 1/2.
    """

    def __init__(
        self,
        kind: Literal["crop", "shift"],
        amount: float,
        flip: bool,
        g: "torch.Generator",
        fill: "torch.Tensor | None" = None,
    ):
        if kind == "crop" and amount != int(amount):
            raise ValueError(f"crop padding must be a whole number of pixels, got {amount}")
        self.kind, self.amount, self.flip, self.g, self.fill = kind, amount, flip, g, fill

    def __call__(self, x: "torch.Tensor") -> "torch.Tensor":
        return self._crop(x) if self.kind == "crop" else self._shift(x)

    def _crop(self, x: "torch.Tensor") -> "torch.Tensor":
        """One ``gather`` from the zero-padded batch at per-image offsets (a mirrored crop reads
        its columns backwards); its backward is one scatter-add of the batch's size.
        (`crop_flip`'s window trick is the fast forward for uint8 epochs, but its backward
        materializes a width-times larger tensor.)"""
        b, c, h, w = x.shape
        pad = int(self.amount)
        dev = x.device
        dy = torch.randint(0, 2 * pad + 1, (b, 1), device=dev, generator=self.g)
        dx = torch.randint(0, 2 * pad + 1, (b, 1), device=dev, generator=self.g)
        cols = torch.arange(w, device=dev).view(1, w)
        if self.flip:
            mirrored = torch.rand((b, 1), device=dev, generator=self.g) < 0.5
            cols = torch.where(mirrored, w - 1 - cols, cols)
        rows = dy + torch.arange(h, device=dev).view(1, h)
        at = (rows.view(b, h, 1) * (w + 2 * pad) + (dx + cols).view(b, 1, w)).view(b, 1, h * w).expand(b, c, h * w)
        padded = torch.nn.functional.pad(x, (pad,) * 4) if pad else x
        return padded.reshape(b, c, -1).gather(2, at).view(b, c, h, w)

    def _shift(self, x: "torch.Tensor") -> "torch.Tensor":
        import torch.nn.functional as F

        b, _, h, w = x.shape
        r = torch.rand((b, 3), device=x.device, generator=self.g)
        # align_corners=True: the grid runs over [-1, 1] from the first to the last pixel centre,
        # so one pixel is 2 / (size - 1) grid units
        sx = (r[:, 0] * 2 - 1) * self.amount * 2 / max(1, w - 1)
        sy = (r[:, 1] * 2 - 1) * self.amount * 2 / max(1, h - 1)
        mirror = torch.where(r[:, 2] < 0.5, -1.0, 1.0) if self.flip else torch.ones(b, device=x.device)
        theta = torch.zeros((b, 2, 3), device=x.device, dtype=x.dtype)
        theta[:, 0, 0] = mirror
        theta[:, 0, 2] = mirror * sx
        theta[:, 1, 1] = 1.0
        theta[:, 1, 2] = sy
        grid = F.affine_grid(theta, list(x.shape), align_corners=True)
        fill = None if self.fill is None else self.fill.to(x.device, x.dtype).view(1, -1, 1, 1)
        src = x if fill is None else x - fill
        out = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        return out if fill is None else out + fill


class Augmented:
    """``model`` behind a `RandomTransform`: calling it returns model(T(x)) with a fresh T, so
    `bench.pgd.pgd` run on it takes each step through a new augmentation. A plain callable
    (PGD only calls its model); put the model itself in eval mode (`attacks.source.frozen`)."""

    def __init__(self, model: "torch.nn.Module", transform: RandomTransform):
        self.model, self.transform = model, transform

    def __call__(self, x: "torch.Tensor") -> "torch.Tensor":
        return self.model(self.transform(x))
