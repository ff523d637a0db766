"""``none``: publish the clean data. The reference row every leaderboard section starts with."""
from __future__ import annotations

from bench.api import ATTACKS, Attack, AttackContext, Perturbation, ThreatModel, lazy_import

torch = lazy_import("torch")


@ATTACKS.register(
    "none",
    description="Clean data, no perturbation (the reference row)",
    threat=ThreatModel.none(),
    category="baseline",
)
class NoAttack(Attack):
    def generate(self, train, ctx: AttackContext) -> Perturbation:
        c, h, w = train.x.shape[1:]
        return Perturbation(torch.zeros(train.num_classes, c, h, w), mode="class")
