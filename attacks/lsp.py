"""``lsp``: linearly separable synthetic shortcut patches (Yu et al. KDD 2022, "Availability
attacks create shortcuts"), a training-free L2 baseline (``docs/algorithms/baselines.md``).

``make_classification`` draws well-separated Gaussian clusters (one per class, ``class_sep``
10) in C·(H/p)·(W/p) dimensions; each point is laid out as a (H/p)×(W/p)×C grid, every
value blown up to a p×p patch, and the result scaled to the L2 norm ``l2_budget``. The i-th
image of class k gets the i-th synthetic point of class k.

Budget units: L2 of δ on the [0, 1] scale over the whole image. The code's default is
ε = 6 in L∞-equivalent /255 units, i.e. ‖δ‖₂ = sqrt((6/255)²·3072) = 1.3041 for 32×32×3, the
default here; for another image size pass ``l2_budget`` = ε/255·sqrt(C·H·W).
"""
from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field

from bench.api import ATTACKS, Attack, AttackContext, Perturbation, ThreatModel, lazy_import

torch = lazy_import("torch")

#: The code's default budget: ε = 6/255 L∞-equivalent over a 32×32×3 image.
DEFAULT_L2 = round(6 / 255 * math.sqrt(3 * 32 * 32), 4)


class LSPParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    l2_budget: float = Field(DEFAULT_L2, gt=0, description="‖δ‖₂ per image on the [0, 1] scale (default: ε = 6/255 L∞-equivalent at 32×32×3)")
    patch_size: int = Field(8, ge=1, description="side of the constant patches (code: 8)")
    class_sep: float = Field(10.0, gt=0, description="sklearn make_classification class_sep (code: 10)")


def rank_within_class(y: "torch.Tensor", num_classes: int) -> "torch.Tensor":
    """For each item, how many earlier items share its label (0, 1, 2, … per class, in order)."""
    order = torch.argsort(y, stable=True)
    counts = torch.bincount(y, minlength=num_classes)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(y)
    rank[order] = torch.arange(len(y), device=y.device) - starts[y[order]]
    return rank


@ATTACKS.register(
    "lsp",
    params=LSPParams,
    description="Synthetic linearly separable patch noise per class (training-free), scaled to an L2 budget",
    reference="Yu et al. KDD 2022 (SP/LSP); dayu11/Availability-Attacks-Create-Shortcuts synthetic_perturbations",
    threat=ThreatModel("l2", "l2_budget"),
    category="training-free",
)
class SyntheticPatches(Attack):
    def generate(self, train, ctx: AttackContext) -> Perturbation:
        from sklearn.datasets import make_classification

        p: LSPParams = self.params
        n, c, h, w = train.x.shape
        k = train.num_classes
        gh, gw = math.ceil(h / p.patch_size), math.ceil(w / p.patch_size)
        y = train.y.cpu()
        per_class = int(torch.bincount(y, minlength=k).max())
        feats, labels = make_classification(
            n_samples=k * per_class, n_features=c * gh * gw, n_informative=c * gh * gw, n_redundant=0,
            n_repeated=0, n_classes=k, n_clusters_per_class=1, class_sep=p.class_sep, flip_y=0.0,
            random_state=ctx.seed,
        )
        pts = torch.as_tensor(feats, dtype=torch.float32).view(-1, gh, gw, c).permute(0, 3, 1, 2)  # grid (H/p, W/p, C)
        img = pts.repeat_interleave(p.patch_size, 2).repeat_interleave(p.patch_size, 3)[:, :, :h, :w]
        img = img / img.flatten(1).norm(dim=1).view(-1, 1, 1, 1) * p.l2_budget
        labels = torch.as_tensor(labels)
        # the i-th image of class k takes the i-th synthetic point of class k
        start = torch.zeros(k, dtype=torch.long)
        start[1:] = torch.cumsum(torch.bincount(labels, minlength=k), 0)[:-1]
        by_label = torch.argsort(labels, stable=True)
        pick = by_label[start[y] + rank_within_class(y, k)]
        return Perturbation(img[pick].contiguous().to(ctx.device), mode="sample", stats={"l2": p.l2_budget, "points": len(labels)})
