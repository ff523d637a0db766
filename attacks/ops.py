"""``ops``: the one-pixel shortcut (Wu et al. ICLR 2023), a training-free L0 baseline (``docs/algorithms/baselines.md``).

For each class, every (position, corner colour c ∈ {0, 1}^C) pair is scored by
mean|c − x_pos| / std|c − x_pos| over that class's images and all channels (large and
consistent deviation = an easy shortcut); the best pair not already taken by an earlier
class wins, and that pixel of every image of the class is set to c. As a perturbation this is
δ = c − x at the chosen pixel (so δ depends on x and is sample-wise) and zero elsewhere; the
signed application publishes exactly c there. ``pixels > 1`` picks the top ``pixels``
distinct positions (the code ranks pairs, so its picks may share a position).
"""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from bench.api import ATTACKS, Attack, AttackContext, Perturbation, ThreatModel, lazy_import

torch = lazy_import("torch")


class OPSParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    pixels: int = Field(1, ge=1, description="L0 budget: pixel positions changed per image (code: sparsity 1)")


def corner_colours(c: int, device=None) -> "torch.Tensor":
    """The 2^C corners of the colour cube as (2^C, C), first channel most significant (the code's order)."""
    v = torch.arange(2**c, device=device)
    return torch.stack([(v >> (c - 1 - ch)) & 1 for ch in range(c)], dim=1).float()


def class_scores(xk: "torch.Tensor", colours: "torch.Tensor") -> "torch.Tensor":
    """mean/std of |c − x| over (images, channels) for every colour and position: (2^C, H, W)."""
    out = []
    for col in colours:  # 2^C iterations (8 for RGB), each batched over all images and positions
        d = (col.view(1, -1, 1, 1) - xk).abs().transpose(0, 1).reshape(-1, *xk.shape[2:])  # (C·n, H, W)
        out.append(d.mean(0) / d.std(0, unbiased=False).clamp_min(1e-12))
    return torch.stack(out)


@ATTACKS.register(
    "ops",
    params=OPSParams,
    description="One-pixel shortcut: one class-specific pixel set to a corner colour, found by a class-wise search",
    reference="Wu et al. ICLR 2023 (OPS); cychomatica/One-Pixel-Shotcut perturb.py::pixel_search",
    threat=ThreatModel("l0", "pixels"),
    category="training-free",
)
class OnePixelShortcut(Attack):
    def generate(self, train, ctx: AttackContext) -> Perturbation:
        dev = ctx.device
        x = train.x.to(dev).float() / 255.0
        y = train.y.to(dev)
        n, c, h, w = x.shape
        colours = corner_colours(c, dev)
        taken = torch.zeros(len(colours), h * w, dtype=torch.bool, device=dev)
        delta = torch.zeros_like(x)
        chosen = []
        for k in range(train.num_classes):  # a loop over classes (the search is greedy in class order)
            members = torch.nonzero(y == k).flatten()
            if len(members) == 0:
                continue
            xk = x[members]
            scores = class_scores(xk, colours).reshape(len(colours), h * w).masked_fill(taken, float("-inf"))
            best, best_colour = scores.max(dim=0)  # best colour per position
            positions = torch.topk(best, self.params.pixels).indices
            for pos in positions.tolist():
                col = int(best_colour[pos])
                taken[col, pos] = True
                r, q = divmod(pos, w)
                delta[members, :, r, q] = colours[col].view(1, c) - xk[:, :, r, q]
                chosen.append({"class": k, "row": r, "col": q, "colour": colours[col].int().tolist()})
        return Perturbation(delta, mode="sample", stats={"pixels": chosen})
