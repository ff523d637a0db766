"""``checkerboard``: a training-free, class-wise shortcut, in one file.

Each class k gets its own ±ε checkerboard whose cell size is ``1 + k % cells`` pixels and
whose phase alternates with the class, the same for every image of the class: a pattern
that predicts the label, the mechanism every availability attack exploits. It exists to
show the plugin contract, not to win a leaderboard.
"""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from bench.api import ATTACKS, Attack, AttackContext, Perturbation, ThreatModel, lazy_import

torch = lazy_import("torch")  # keeps `uebench list attacks` fast: torch loads when the attack runs


class CheckerboardParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    epsilon: float = Field(8.0, gt=0, le=255, description="L∞ budget in /255 units")
    cells: int = Field(4, ge=1, le=16, description="how many different cell sizes the classes cycle through")


@ATTACKS.register(
    "checkerboard",
    params=CheckerboardParams,
    description="Example plugin: a class-specific ±ε checkerboard (training-free shortcut)",
    reference="uebench examples/uebench-plugin-example",
    threat=ThreatModel("linf", "epsilon"),  # required: the harness checks every published image against it
    version="1",  # bump when the same params would produce another perturbation
)
class Checkerboard(Attack):
    def generate(self, train, ctx: AttackContext) -> Perturbation:
        p: CheckerboardParams = self.params
        c, h, w = train.x.shape[1:]
        rows = torch.arange(h).view(h, 1)
        cols = torch.arange(w).view(1, w)
        boards = []
        for k in range(train.num_classes):
            size = 1 + k % p.cells
            sign = ((rows // size + cols // size + k // p.cells) % 2) * 2 - 1
            boards.append(sign.float().expand(c, h, w))
        delta = torch.stack(boards) * (p.epsilon / 255.0)  # float on the [0, 1] scale, one per class
        return Perturbation(delta, mode="class", stats={"cells": p.cells})
