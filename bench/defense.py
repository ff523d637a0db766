"""The defense plugin seam: hooks into the trainer, each a no-op by default.

A defense is what the exploiter does against a poison. It never re-implements the training
loop; it overrides some of these hooks, which the trainer calls at fixed points:

==================  =====================================================================
``transform_train`` uint8 (N, C, H, W) → uint8, once before training (grayscale, BDR, JPEG)
``transform_test``  the same for the clean test set (Going Grayscale grays the test set too)
``batch_transform`` float batch after crop/flip → (x, y); y may become soft (mixup, cutmix)
``training_step``   replaces forward/backward for a batch and returns the loss (AT), or (loss, logits)
``param_groups``    optimizer parameter groups, each with an ``lr_mult`` (ST's per-layer rates)
``on_epoch_end``    may return ``"rollback"`` to restore the last good epoch (ST)
``extra_stages``    further training stages after the main one (ST-Full's fine-tuning)
``on_train_end``    after the last epoch; may load another state into the model (ST's best)
==================  =====================================================================

A defense that needs a few clean images (ST picks its model with the paper's 20) gets them as
``self.holdout``: images the dataset withholds from training (``holdout: N``), never the test
set; None if the dataset reserves none.

No hook ever sees the test set: the exploiter is evaluated on it, never trained or tuned on
it (``setup`` gets the model and the train set only; ``transform_test`` maps images it is
not allowed to look at as a whole, it is applied by the trainer).

A `DefenseStack` composes several defenses in order, e.g. ``[grayscale, mixup]``.
``cost`` declares the forward+backward passes per step relative to standard training, so the
leaderboard can show what a defense costs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel

from registry import DEFENSES, RegistryError

if TYPE_CHECKING:
    import torch

    from registry.core import Entry

EpochAction = Literal["continue", "rollback"]


@dataclass
class EpochState:
    """What an ``on_epoch_end`` hook sees; ``optimizer.param_groups[i]["lr_mult"]`` is writable.

    ``test_acc`` is not here on purpose: a defense that watched the clean test accuracy
    would be tuning on the test set.
    """

    stage: int
    epoch: int
    model: "torch.nn.Module"
    optimizer: "torch.optim.Optimizer"
    train_acc: float
    train_loss: float
    device: "torch.device"


class Defense:
    """Base class of defense plugins; ``params`` is the validated params model."""

    cost: float = 1.0
    holdout: "Any" = None  # ImageData of clean held-out images, set by the trainer before setup

    def __init__(self, params: BaseModel):
        self.params = params

    def setup(self, model: "torch.nn.Module", train: Any, num_classes: int) -> None:
        """Called once per training run before the first epoch, with the model and the
        (transformed) training set; never with test data."""

    def transform_train(self, x: "torch.Tensor") -> "torch.Tensor":
        """Applied once to the whole uint8 train set before training; must return uint8 (N, C, H, W)."""
        return x

    def transform_test(self, x: "torch.Tensor") -> "torch.Tensor":
        return x

    def batch_transform(self, x: "torch.Tensor", y: "torch.Tensor", g: "torch.Generator"):
        return x, y

    def training_step(self, model: "torch.nn.Module", x: "torch.Tensor", y: "torch.Tensor", loss_fn) -> "torch.Tensor | None":
        """Return the loss to back-propagate, or None for the standard forward pass.

        May return ``(loss, logits)`` instead, so that train accuracy is counted on the
        batch the step actually trained on (AT's adversarial batch)."""
        return None

    def param_groups(self, model: "torch.nn.Module") -> list[dict] | None:
        return None

    def on_epoch_end(self, state: "EpochState") -> EpochAction | None:
        return None

    def extra_stages(self) -> list[dict]:
        """Each dict overrides TrainConfig fields for one more stage (e.g. ``{"epochs": 10, "lr": 0.01}``)."""
        return []

    def on_train_end(self, model: "torch.nn.Module") -> bool:
        """After the last epoch; return True if the hook loaded other weights into the model
        (the trainer then evaluates the model it ends with again)."""
        return False

    def report(self) -> dict:
        """Extra facts for the result row (e.g. ST's rollback count)."""
        return {}


@dataclass
class DefenseStack:
    """Defenses applied together, in order. An empty stack is standard training."""

    defenses: list[Defense] = field(default_factory=list)
    names: list[str] = field(default_factory=list)

    @classmethod
    def build(cls, specs: list[tuple[str, dict]]) -> "DefenseStack":
        ds = [DEFENSES.create(name, **params) for name, params in specs]
        stack = cls(ds, [n for n, _ in specs])
        stack._check()
        return stack

    def _check(self) -> None:
        for hook in ("training_step", "param_groups"):
            owners = [n for n, d in zip(self.names, self.defenses) if _overrides(d, hook)]
            if len(owners) > 1:
                raise ValueError(f"defense stack {self.names}: {' and '.join(owners)} both override {hook}; use one")

    def overrides(self, hook: str) -> bool:
        """Whether any defense in the stack implements ``hook``."""
        return any(_overrides(d, hook) for d in self.defenses)

    @property
    def cost(self) -> float:
        c = 1.0
        for d in self.defenses:
            c *= d.cost
        return c

    def setup(self, model, train, num_classes, holdout=None) -> None:
        for d in self.defenses:
            d.holdout = holdout
            d.setup(model, train, num_classes)

    def transform_train(self, x):
        for d in self.defenses:
            x = d.transform_train(x)
        return x

    def transform_test(self, x):
        for d in self.defenses:
            x = d.transform_test(x)
        return x

    def batch_transform(self, x, y, g):
        for d in self.defenses:
            x, y = d.batch_transform(x, y, g)
        return x, y

    def training_step(self, model, x, y, loss_fn):
        for d in self.defenses:
            out = d.training_step(model, x, y, loss_fn)
            if out is not None:
                return out
        return None

    def param_groups(self, model):
        for d in self.defenses:
            groups = d.param_groups(model)
            if groups is not None:
                return groups
        return None

    def on_epoch_end(self, state) -> EpochAction:
        actions = [d.on_epoch_end(state) for d in self.defenses]
        return "rollback" if "rollback" in actions else "continue"

    def extra_stages(self) -> list[dict]:
        return [s for d in self.defenses for s in d.extra_stages()]

    def on_train_end(self, model) -> bool:
        return any([d.on_train_end(model) for d in self.defenses])  # a list: every hook runs

    def report(self) -> dict:
        out: dict = {}
        for d in self.defenses:
            out.update(d.report())
        return out


def _overrides(defense: Defense, hook: str) -> bool:
    return getattr(type(defense), hook) is not getattr(Defense, hook)


class _DefenseContract:
    """The rules of `registry.DEFENSES`, checked when a plugin registers."""

    META = {"category", "cost"}

    def check(self, entry: "Entry") -> None:
        if not (isinstance(entry.factory, type) and issubclass(entry.factory, Defense)):
            raise RegistryError(f"{entry.label}: must be a subclass of bench.api.Defense, got {entry.factory!r}")
        unknown = sorted(set(entry.meta) - self.META)
        if unknown:
            raise RegistryError(f"{entry.label}: unknown registration keyword(s) {', '.join(unknown)} (allowed: {', '.join(sorted(self.META))})")


CONTRACT = _DefenseContract()
