"""``random``: uniform noise δ ~ U[-ε, ε], sample-wise or class-wise (``docs/algorithms/baselines.md``).

The EM paper's Figure 1 baseline: sample-wise random noise leaves accuracy near clean;
class-wise random noise is a (weak) shortcut.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from bench.api import ATTACKS, Attack, AttackContext, Perturbation, ThreatModel, lazy_import

torch = lazy_import("torch")


class RandomParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    mode: Literal["sample", "class"] = "sample"
    epsilon: float = Field(8.0, gt=0, le=255, description="L∞ budget in /255 units")


@ATTACKS.register(
    "random",
    params=RandomParams,
    description="Uniform random noise in [-ε, ε], sample- or class-wise",
    reference="Huang et al. ICLR 2021 (EM), Fig. 1; toolbox.py::random_noise",
    threat=ThreatModel("linf", "epsilon"),
    category="baseline",
)
class RandomNoise(Attack):
    def generate(self, train, ctx: AttackContext) -> Perturbation:
        eps = self.params.epsilon / 255.0
        rows = len(train) if self.params.mode == "sample" else train.num_classes
        g = torch.Generator().manual_seed(ctx.seed)
        delta = (torch.rand((rows, *train.x.shape[1:]), generator=g) * 2 - 1) * eps
        return Perturbation(delta, mode=self.params.mode)
