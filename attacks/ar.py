"""``ar`` / ``ar-linf``: autoregressive perturbations (Sandoval-Segura et al., NeurIPS 2022,
"Autoregressive Perturbations for Data Poisoning"), training-free (``docs/algorithms/model_free.md``).

Each class owns one AR process: per channel, 8 coefficients that predict a value from the
8 values before it in its 3×3 window (raster order), the window's bottom-right tap being the
value itself (coefficient 0). Every image gets a fresh Gaussian start signal of
(H + crop)×(W + crop); the recursion overwrites every value from the third row and column on;
the first ``crop`` rows and columns are dropped and the rest scaled to the budget (L2 1.0 on
the [0, 1] scale for ``ar``, the paper's; L∞ 8/255 for ``ar-linf``, the script's default).

Coefficients. The reference ships a fixed table found once by its param finder; this module
never copies it but *runs the same procedure*, seeded (``coef_seed``): draw the 8 taps of each
channel from N(0, 1), divide them by their sum, discard the process if any of a few trial
signals is not finite or has a norm above ``norm_bound`` (it diverges), and keep it only if
every process kept before it responds strongly to its signal (the matched-filter residual
test below). That rejection is also what keeps the recursion stable: the recursion is linear,
so a process whose trial signals stay small has a bounded gain, and a process whose taps sum
to (nearly) zero, the source of the reference's NaN class (issue #3), never passes it. The
generator checks again that every δ it returns is finite.
"""
from __future__ import annotations

import functools
import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from bench.api import ATTACKS, Attack, AttackContext, Perturbation, ThreatModel, lazy_import

torch = lazy_import("torch")

#: Coefficient search: candidates drawn and tested at once (vectorized recursion).
_BATCH = 1024
#: Images whose noise is generated at once (bounded memory: about 64 MB at 32×32).
_CHUNK = 4096
_AR_VERSION = "1"


class ARCommon(BaseModel):
    """The AR process and its coefficient search (shared by ``ar`` and ``ar-linf``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    crop: int = Field(4, ge=0, le=64, description="rows/columns generated above and left of the image, then dropped (code: 36×36 cropped by 4 on CIFAR)")
    coefficients: Literal["search", "random"] = Field(
        "search", description="search: the code's param finder (stable and mutually separable); random: stable only (no separability test)"
    )
    min_response: float | None = Field(
        None, ge=0, le=1e6,
        description="least response of every earlier class's filter to a new process (code: 10 for its 10-class table, 3 for 100); null: 10 if K <= 10, else 3",
    )
    norm_bound: float = Field(50.0, gt=0, le=1e6, description="largest L2 norm of a raw cropped trial signal (code: --gen_norm_upper_bound 50)")
    stability_trials: int = Field(3, ge=1, le=100, description="trial signals per candidate process (code: --num_gen_trials 3)")
    max_candidates: int = Field(1_000_000, ge=1, le=100_000_000, description="give up after this many candidates (code: --num_samples 1e6)")
    coef_seed: int | None = Field(
        0, ge=0, le=2**31 - 1, description="seed of the coefficient search (code: one fixed table for every run); null: the cell's seed"
    )


class ARParams(ARCommon):
    l2_budget: float = Field(1.0, gt=0, le=1000, description="‖δ‖₂ per image on the [0, 1] scale (paper and README: 1.0)")


class ARLinfParams(ARCommon):
    epsilon: float = Field(8.0, gt=0, le=255, description="‖δ‖∞ in /255 units (the script's default --epsilon 8 --p_norm 0)")


# -- the AR process ---------------------------------------------------------------------------
def sample_coefficients(n: int, channels: int, gen: "torch.Generator") -> "torch.Tensor":
    """(n, C, 3, 3): N(0, 1) taps, the bottom-right one 0, each channel divided by its sum."""
    b = torch.randn((n, channels, 3, 3), generator=gen, dtype=torch.float64)
    b[..., 2, 2] = 0
    return (b / b.sum((-1, -2), keepdim=True)).float()


_TAPS = [(i, j) for i in range(3) for j in range(3) if (i, j) != (2, 2)]
_DI = [i - 2 for i, _ in _TAPS]
_DJ = [j - 2 for _, j in _TAPS]


def _run(x: "torch.Tensor", w: "torch.Tensor", ch: int, crop: int, bound: float | None) -> tuple["torch.Tensor", "torch.Tensor"]:
    """The recursion on ``x`` (S, T, B·C), positions first so that every gather copies rows,
    one anti-diagonal r + c = d at a time: each tap of (r, c) lies on an earlier diagonal, so
    a whole diagonal is one gather. ``w`` (8, 1, B·C) are the taps of `_TAPS`. With a
    ``bound``, a signal is dropped as soon as the values computed so far inside the crop have
    an L2 norm above it (that norm only grows) or are not finite. Returns (x of the kept
    signals, their indices)."""
    s, t, bc = x.shape
    di, dj = torch.tensor(_DI).view(8, 1), torch.tensor(_DJ).view(8, 1)
    alive = torch.arange(bc // ch)
    sq = torch.zeros(bc, dtype=torch.float64)
    for d in range(4, s + t - 1):
        r = torch.arange(max(2, d - t + 1), min(s - 1, d - 2) + 1)
        c = d - r
        x[r, c] = v = (x[r + di, c + dj] * w).sum(0)
        if bound is None:
            continue
        inside = (r >= crop) & (c >= crop)
        sq += v[inside].double().pow(2).sum(0)
        if d % (2 if d < 16 else 4) == 0 or d == s + t - 2:
            keep = sq.view(-1, ch).sum(1) <= bound**2  # False for NaN
            if not keep.all():
                cols = keep.repeat_interleave(ch)
                x, w, sq, alive = x[:, :, cols], w[:, :, cols], sq[cols], alive[keep]
                if not len(alive):
                    break
    return x, alive


def _layout(coefs: "torch.Tensor") -> "torch.Tensor":
    return torch.stack([coefs[:, :, i, j].reshape(-1) for i, j in _TAPS]).view(8, 1, -1).float()


def _unlayout(x: "torch.Tensor", ch: int, crop: int) -> "torch.Tensor":
    s, t, _ = x.shape
    return x[crop:, crop:].reshape(s - crop, t - crop, -1, ch).permute(2, 3, 0, 1).contiguous()


def ar_fill(coefs: "torch.Tensor", start: "torch.Tensor") -> "torch.Tensor":
    """The recursion on ``start`` (B, C, S, T) with per-signal ``coefs`` (B, C, 3, 3), in
    raster order: x[r, c] = Σ coefs · x[r-2 : r+1, c-2 : c+1] for r, c >= 2 (uncropped)."""
    b, ch, s, t = start.shape
    x = start.permute(2, 3, 0, 1).reshape(s, t, b * ch).contiguous()
    return _unlayout(_run(x, _layout(coefs).to(x.dtype), ch, 0, None)[0], ch, 0)


def ar_signals(coefs: "torch.Tensor", shape: tuple[int, int, int], crop: int, gen: "torch.Generator",
               bound: float | None = None) -> tuple["torch.Tensor", "torch.Tensor"]:
    """Raw (unscaled) signals, one per row of ``coefs`` (B, C, 3, 3), each from a fresh
    N(0, 1) start of (H + crop)×(W + crop), filled by the recursion and cropped above and
    left; (signals, indices of those kept, all of them without a ``bound``). Only the first
    two rows and columns of a start signal are drawn: the recursion overwrites the rest
    before reading it, so the signals are those of a fully drawn start."""
    ch, h, w = shape
    s, t, bc = h + crop, w + crop, coefs.shape[0] * ch
    x = torch.empty((s, t, bc))
    x[:2] = torch.randn((2, t, bc), generator=gen)
    x[2:, :2] = torch.randn((s - 2, 2, bc), generator=gen)
    x, alive = _run(x, _layout(coefs), ch, crop, bound)
    return _unlayout(x, ch, crop), alive


def matched_filters(coefs: "torch.Tensor") -> "torch.Tensor":
    """(K, C, 3, 3): each process's coefficients with −1 at the predicted tap. Convolved with a
    signal of the same process it gives 0 everywhere (the AR residual)."""
    f = coefs.clone()
    f[..., 2, 2] = -1
    return f


def responses(filters: "torch.Tensor", signals: "torch.Tensor") -> "torch.Tensor":
    """(B, K): Σ relu(filter_k ⋆ signal_b), summed over channels and positions (the code's ``response``)."""
    return torch.nn.functional.conv2d(signals, filters).clamp_min(0).sum((-1, -2))


def find_processes(num_classes: int, shape: tuple[int, int, int], crop: int, p: ARCommon, gen: "torch.Generator") -> tuple["torch.Tensor", dict]:
    """(K, C, 3, 3) coefficients by the reference's procedure, and search statistics.

    Candidates are drawn ``_BATCH`` at a time and examined in order, as the code's one-by-one
    loop would: a candidate is unstable if any of its ``stability_trials`` raw signals is not
    finite or has an L2 norm above ``norm_bound`` (trials run only for the candidates that
    passed the earlier ones: the verdict is the same); a stable one is kept if (``search``)
    every process kept before it responds to its last trial signal, scaled to L2 = 1, with at
    least ``min_response``."""
    min_resp = p.min_response if p.min_response is not None else (10.0 if num_classes <= 10 else 3.0)
    kept: list = []
    tried = unstable = 0
    worst = math.inf
    while len(kept) < num_classes:
        if tried >= p.max_candidates:
            raise RuntimeError(
                f"ar: found {len(kept)} of {num_classes} processes in {tried} candidates (min_response {min_resp:g}, "
                f"norm_bound {p.norm_bound:g}); lower min_response or raise max_candidates"
            )
        n = min(_BATCH, p.max_candidates - tried)
        cand = sample_coefficients(n, shape[0], gen)
        idx = torch.arange(n)  # the candidates still stable
        last = None
        for _ in range(p.stability_trials):
            sig, alive = ar_signals(cand[idx], shape, crop, gen, p.norm_bound)
            norm = sig.flatten(1).norm(dim=1)
            good = torch.isfinite(sig).flatten(1).all(1) & (norm <= p.norm_bound) & (norm > 0)
            idx, last = idx[alive[good]], sig[good] / norm[good].view(-1, 1, 1, 1)
            if not len(idx):
                break
        used = n
        for j, i in enumerate(idx.tolist()):
            if p.coefficients == "search" and kept:
                low = float(responses(matched_filters(torch.stack(kept)), last[j : j + 1]).min())
                if low < min_resp:
                    continue
                worst = min(worst, low)
            kept.append(cand[i])
            if len(kept) == num_classes:
                used = i + 1
                break
        unstable += used - int((idx < used).sum())
        tried += used
    stats = {"candidates": tried, "unstable": unstable, "min_response": min_resp,
             "lowest_response": None if math.isinf(worst) else round(worst, 4)}
    return torch.stack(kept), stats


@functools.lru_cache(maxsize=8)
def _processes(num_classes: int, shape: tuple[int, int, int], seed: int, p: ARCommon) -> tuple["torch.Tensor", dict]:
    """`find_processes` from ``seed``, remembered: cells that differ only in their budget or
    their start signals reuse one search."""
    return find_processes(num_classes, shape, p.crop, p, torch.Generator().manual_seed(seed))


# -- the attacks ------------------------------------------------------------------------------
@ATTACKS.register(
    "ar",
    params=ARParams,
    description="Autoregressive perturbations: one 3×3 AR process per class fills a fresh Gaussian start per image (L2)",
    reference="Sandoval-Segura et al. NeurIPS 2022; psandovalsegura/autoregressive-poisoning create_ar_poisons_3channel.py",
    threat=ThreatModel("l2", "l2_budget"),
    category="training-free",
    version=_AR_VERSION,
)
class Autoregressive(Attack):
    norm = "l2"

    def budget(self) -> float:
        return self.params.l2_budget

    def processes(self, ctx: AttackContext) -> tuple["torch.Tensor", dict]:
        """The per-class coefficients (K, C, 3, 3) this attack uses in ``ctx``, and how they were found."""
        p = self.params
        seed = ctx.seed if p.coef_seed is None else p.coef_seed
        search = ARCommon(**{k: getattr(p, k) for k in ARCommon.model_fields})
        coefs, stats = _processes(ctx.num_classes, tuple(ctx.img_shape), seed, search)
        return coefs.clone(), {**stats, "coef_seed": seed}

    def generate(self, train, ctx: AttackContext) -> Perturbation:
        coefs, stats = self.processes(ctx)
        gen = torch.Generator().manual_seed((ctx.seed * 1_000_003 + 7) % 2**63)
        y = train.y.cpu()
        shape = tuple(train.x.shape[1:])
        raw = torch.cat([ar_signals(coefs[y[s : s + _CHUNK]], shape, self.params.crop, gen)[0] for s in range(0, len(y), _CHUNK)])
        flat = raw.flatten(1)
        size = flat.abs().amax(1) if self.norm == "linf" else flat.norm(dim=1)
        if not (torch.isfinite(raw).all() and (size > 0).all()):
            raise RuntimeError("ar: a generated signal is not finite or is zero (an unstable process passed the search)")
        scale = self.budget() / 255.0 if self.norm == "linf" else self.budget()
        delta = raw * (scale / size).view(-1, 1, 1, 1)
        stats.update(raw_norm_max=round(float(flat.norm(dim=1).max()), 4), norm=self.norm)
        return Perturbation(delta.to(ctx.device), mode="sample", stats=stats)


@ATTACKS.register(
    "ar-linf",
    params=ARLinfParams,
    description="Autoregressive perturbations scaled to an L∞ budget (the script's default 8/255)",
    reference="Sandoval-Segura et al. NeurIPS 2022 (App. A.6); create_ar_poisons_3channel.py --p_norm 0",
    threat=ThreatModel("linf", "epsilon"),
    category="training-free",
    version=_AR_VERSION,
)
class AutoregressiveLinf(Autoregressive):
    norm = "linf"

    def budget(self) -> float:
        return self.params.epsilon
