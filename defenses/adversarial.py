"""``at``: PGD adversarial training (Madry et al.), the exploiter of EM App. D and Going Grayscale Table 7.

Each step replaces the batch by its PGD-k adversarial version and trains on that. Defaults
follow the EM code (``configs/cifar10/resnet18_madrys.yaml``, ``madrys.py``; see
``docs/algorithms/adversarial.md``): ε 8/255, step 2/255, 10 steps, a Gaussian start
x + step·N(0, 1), and the
examples crafted with the model in **eval** mode (BatchNorm uses its running statistics and
crafting does not update them), then one train-mode step on them. Going Grayscale's paper
says PGD-7: ``steps: 7``. ``craft_mode: train`` crafts in train mode instead (BatchNorm batch
statistics, and each crafting forward updates the running statistics).

The schedule of the reference (100 epochs, MultiStepLR at 75/90) is a training setting of
the matrix (``train: {schedule: multistep, milestones: [0.75, 0.9]}``), not of the defense.
Cost: k crafting forward+backward passes plus the training pass, so ``cost = k + 1``.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from bench.api import DEFENSES, Defense


class ATParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    epsilon: float = Field(8.0, gt=0, le=255, description="L∞ radius in /255 units")
    step_size: float = Field(2.0, gt=0, le=255, description="PGD step in /255 units (EM code: 2/255)")
    steps: int = Field(10, ge=1, description="PGD steps (EM code: 10; Going Grayscale paper: 7)")
    start: Literal["gaussian", "uniform"] = Field("gaussian", description="gaussian: x + step·N(0,1) (madrys.py)")
    craft_mode: Literal["eval", "train"] = Field("eval", description="model mode while crafting (madrys.py: eval)")


@DEFENSES.register(
    "at",
    params=ATParams,
    description="PGD adversarial training (ε 8/255, step 2/255, 10 steps, Gaussian start)",
    reference="Madry et al. ICLR 2018; EM code madrys.py; Going Grayscale Table 7 (PGD-7)",
    category="adversarial",
    cost="k PGD forward+backward passes + 1 training pass per step",
)
class AdversarialTraining(Defense):
    def __init__(self, params: ATParams):
        super().__init__(params)
        self.cost = float(params.steps + 1)

    def training_step(self, model, x, y, loss_fn):
        from bench.pgd import PGD, pgd

        p = self.params
        model.train(p.craft_mode == "train")
        x_adv, _ = pgd(model, x, y, PGD(p.epsilon / 255.0, p.step_size / 255.0, p.steps, start=p.start), loss_fn=loss_fn)
        model.train()
        logits = model(x_adv)
        return loss_fn(logits, y), logits

    def report(self) -> dict:
        p = self.params
        return {"at": {"epsilon": p.epsilon, "step_size": p.step_size, "steps": p.steps, "start": p.start, "craft_mode": p.craft_mode}}
