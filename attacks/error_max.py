"""``error-max`` and its presets ``tap`` and ``hypo``: signed PGD on δ against a source model
trained once on clean data, then fixed (``docs/algorithms/baselines.md``,
``docs/algorithms/pgd_attacks.md``).

The source model is first trained on the *clean* data with the exploiter's own engine
(`attacks.source.train_on_clean`, default settings = the EM code's 60-epoch recipe with
crop+flip and a cosine lr), then frozen; δ moves by signed PGD, whole passes over the data
repeated without further model training until the attack's success rate on x + δ reaches
``target_error`` or ``max_rounds`` passes are done. What PGD optimizes is two params:

- ``target``: the labels the loss is taken against: the true y (``untargeted``) or the
  permuted (y + 1) mod K (``next_class``, the default recipe of TAP / adversarial poisoning).
- ``direction``: ``maximize`` (ascent: error-maximizing noise, "PGD-20" in the EM paper) or
  ``minimize`` (descent: towards the target labels for TAP; on the true labels, HYPO's
  hypocritical perturbations, an error-minimizing δ on a *fixed* model, with no bi-level loop).

``restarts`` repeats the whole optimization from fresh random starts (``init``) and keeps the
best by the objective; ``augment`` takes every PGD step through a fresh differentiable
shift + flip of x + δ (TAP's ``--paugment``). With the defaults (untargeted, maximize, one
start at δ = 0, no augmentation) this is version 1 of ``error-max`` exactly: same δ and
same stats (its cache keys changed once, when the new fields joined its params).

The EM paper's Figure 1 shows that untargeted error-maximizing noise barely hurts an
exploiter when sample-wise; targeted (TAP) and hypocritical (HYPO) noise are strong poisons.
"""
from __future__ import annotations

import time
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from attacks.delta import Augmented, PGDParams, RandomTransform, pgd_pass
from attacks.em.params import with_defaults
from attacks.source import CleanSourceParams, frozen, mean_loss_and_acc, train_on_clean
from attacks.views import CleanView, fixed_batches
from bench.api import ATTACKS, Attack, AttackContext, Perturbation, ThreatModel, TrainConfig, lazy_import

torch = lazy_import("torch")

ERROR_MAX_REFERENCE = "Huang et al. ICLR 2021 (EM), Fig. 1 min-max baseline; perturbation.py attack_type min-max"
TAP_REFERENCE = "Fowl et al. NeurIPS 2021, Adversarial Examples Make Strong Poisons; lhfowl/adversarial_poisons anneal.py --recipe targeted"
HYPO_REFERENCE = "Tao et al. NeurIPS 2021, Better Safe Than Sorry (hypocritical perturbations); TLMichael/Delusive-Adversary poison.py P2"


class ErrorMaxParams(CleanSourceParams, PGDParams):
    """Params of PGD noise on a fixed clean-trained source; defaults follow the EM code's
    ``min-max`` scripts (untargeted ascent), the presets those of TAP and HYPO."""

    _BY_MODE: ClassVar[dict[str, dict[str, Any]]] = {
        "pgd_steps": {"sample": 20, "class": 1},
        "target_error": {"sample": 0.9, "class": 0.8},
    }
    target_error: float = Field(
        0.9, gt=0, le=1,
        description="stop once the success rate on x + δ reaches it: the source's error (maximize), its rate of "
        "predicting the target label (next_class) or its accuracy (minimize, untargeted); default 0.9 sample-wise, 0.8 class-wise",
    )
    max_rounds: int = Field(20, ge=1, le=10_000, description="at most this many PGD passes over the data (TAP, HYPO: 1, one run of pgd_steps)")
    target: Literal["untargeted", "next_class"] = Field(
        "untargeted", description="labels the loss is taken against: the true y, or (y + 1) mod K (TAP code's default targeted recipe)"
    )
    direction: Literal["maximize", "minimize"] = Field(
        "maximize",
        description="ascent (error-max) or descent (HYPO on the true labels; TAP towards the target labels) on the loss; "
        "default: maximize untargeted, minimize with next_class",
    )
    restarts: int = Field(1, ge=1, le=100, description="independent runs from fresh random starts, the best kept (TAP code: 8)")
    restart_select: Literal["set", "sample"] = Field(
        "set",
        description="keep the run with the lowest mean objective over the whole set (TAP code) or, per row of δ, "
        "the run with the lowest objective on that image (class-wise: that class's images)",
    )
    init: Literal["zeros", "uniform", "randn"] = Field(
        "zeros", description="δ₀: zeros (EM code, HYPO code), U[−ε, ε], or ε·N(0, 1) clipped to ±ε (TAP code's --init randn)"
    )
    augment: bool = Field(
        False, description="take each PGD step through a fresh differentiable shift + flip of x + δ (TAP code's --paugment: on)"
    )
    augment_shift: float = Field(
        4.0, ge=0, le=64, description="augment: largest shift in px, drawn uniformly and bilinear (TAP code: shift 8 on 32 px = ±4 px)"
    )
    augment_fill: Literal["mean", "black"] = Field(
        "mean", description="augment: colour of the uncovered border: the train set's mean colour (TAP code: 0 in normalized space) or black"
    )

    @model_validator(mode="before")
    @classmethod
    def _direction_default(cls, data: Any) -> Any:
        """A targeted attack descends on the loss towards its targets unless told otherwise."""
        if isinstance(data, dict) and "direction" not in data:
            target = data.get("target", cls.model_fields["target"].default)
            if target == "next_class" and cls.model_fields["direction"].default == "maximize":
                data = {**data, "direction": "minimize"}
        return data

    @model_validator(mode="after")
    def _meaningful(self) -> "ErrorMaxParams":
        if self.target == "next_class" and self.direction == "maximize":
            raise ValueError("target: next_class with direction: maximize pushes images away from the target class; use direction: minimize")
        return self

    def labels_for(self, y: "torch.Tensor", k: int) -> "torch.Tensor":
        """The labels the loss is taken against."""
        return y if self.target == "untargeted" else (y + 1) % k


#: TAP's source: ``village/clients`` ConservativeStrategy (40 epochs, SGD 0.1 Nesterov momentum
#: 0.9, batch 128, wd 5e-4, MultiStepLR ×0.1 at epochs 40 // 2.667, 40 // 1.6, 40 // 1.142 =
#: 14, 25, 35), augmented, no gradient clipping.
TAP_SOURCE = TrainConfig(
    epochs=40, batch_size=128, lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4,
    schedule="multistep", milestones=(0.35, 0.625, 0.875), gamma=0.1, grad_clip=None,
)
#: HYPO's source: ``main.py --train_loss ST`` (VGG-16, 150 epochs, SGD 0.1 momentum 0.9, batch
#: 128, wd 5e-4, MultiStepLR ×0.1 at epochs 100 and 125, crop + flip, no gradient clipping).
HYPO_SOURCE = TrainConfig(
    epochs=150, batch_size=128, lr=0.1, momentum=0.9, weight_decay=5e-4,
    schedule="multistep", milestones=(0.6666, 0.8333), gamma=0.1, grad_clip=None,
)


class _TAPBase(ErrorMaxParams):
    _BY_MODE: ClassVar[dict[str, dict[str, Any]]] = {}  # one run of 250 steps in either mode
    _STEP_DIVISOR: ClassVar[float] = 20  # α = 0.05·ε (the code's --tau 0.05)

    source_train: TrainConfig = Field(TAP_SOURCE, description="the TAP code's source recipe: 40 epochs, Nesterov SGD 0.1, lr ×0.1 at epochs 14, 25, 35")


class _HYPOBase(ErrorMaxParams):
    _BY_MODE: ClassVar[dict[str, dict[str, Any]]] = {}  # one run of 100 steps in either mode
    _STEP_DIVISOR: ClassVar[float] = 5  # α = ε/5 (poison.py: step_size = eps / 5)

    source_train: TrainConfig = Field(HYPO_SOURCE, description="the HYPO code's source recipe: 150 epochs, SGD 0.1, lr ×0.1 at epochs 100, 125")


#: name -> (params class name, base, description, reference, category, default overrides)
PRESETS: dict[str, tuple[str, type[ErrorMaxParams], str, str, str, dict[str, Any]]] = {
    "tap": (
        "TAPParams", _TAPBase,
        "TAP / adversarial poisoning: targeted PGD towards (y + 1) mod K on a clean-trained source, 250 steps, 8 restarts",
        TAP_REFERENCE, "adversarial-poisoning",
        {
            "target": "next_class", "direction": "minimize", "pgd_steps": 250, "step_size": 0.4, "max_rounds": 1,
            "restarts": 8, "init": "randn", "augment": True, "batch_size": 512, "source_arch": "resnet18_cifar",
        },
    ),
    "hypo": (
        "HYPOParams", _HYPOBase,
        "HYPO: hypocritical perturbations, error-minimizing PGD on a fixed clean-trained source (no bi-level loop)",
        HYPO_REFERENCE, "error-minimizing",
        {
            "direction": "minimize", "pgd_steps": 100, "step_size": 1.6, "max_rounds": 1, "batch_size": 256, "source_arch": "vgg16_cifar",
        },
    ),
}


@ATTACKS.register(
    "error-max",
    params=ErrorMaxParams,
    description="Error-maximizing noise: PGD ascent on a source model trained on clean data, sample- or class-wise",
    reference=ERROR_MAX_REFERENCE,
    threat=ThreatModel("linf", "epsilon"),
    category="baseline",
)
class ErrorMaximizing(Attack):
    """PGD noise on a fixed clean-trained source; the source stays available as ``source_model``."""

    source_model = None

    def generate(self, train, ctx: AttackContext) -> Perturbation:
        from bench.pgd import PGD

        p: ErrorMaxParams = self.params
        dev = ctx.device
        x, y = train.x.to(dev), train.y.to(dev)
        n, k = len(train), train.num_classes
        eps = p.epsilon / 255.0
        class_wise = p.mode == "class"
        index = p.pgd_index(y, k)
        labels = p.labels_for(y, k)
        targeted = p.target != "untargeted"
        model, source_stats = train_on_clean(p, train, ctx)

        cl = p.use_channels_last(dev)
        view = CleanView(x, augment=False, padding=0, g=ctx.generator(1), channels_last=cl)
        shape = (k if class_wise else n, *x.shape[1:])
        walk = PGD(eps, p.step_size / 255.0, p.pgd_steps, direction=1 if p.direction == "maximize" else -1, amp=p.amp, channels_last=cl)
        batches = fixed_batches(len(index), p.batch_size, dev)
        crafter = model
        if p.augment:
            fill = x.float().mean(dim=(0, 2, 3)) / 255.0 if p.augment_fill == "mean" else None
            crafter = Augmented(model, RandomTransform("shift", p.augment_shift, True, ctx.generator(4), fill))

        def poisoned(delta, against):
            for b in batches:
                idx = index[b]
                yield view.batch(idx) + (delta[y[idx]] if class_wise else delta[idx]), against[idx]

        def success(delta) -> tuple[float, float]:
            """(accuracy on the true labels, success rate) of the source on x + δ."""
            _, acc = mean_loss_and_acc(model, poisoned(delta, y), p.amp, cl)
            if targeted:
                return acc, mean_loss_and_acc(model, poisoned(delta, labels), p.amp, cl)[1]
            return acc, (1.0 - acc if p.direction == "maximize" else acc)

        loss_clean, acc_clean = mean_loss_and_acc(model, ((view.batch(index[b]), y[index[b]]) for b in batches), p.amp, cl)
        runs: list[dict] = []
        kept = kept_score = None  # the best δ so far and its per-row objective (restarts only)
        with frozen(model):
            for run in range(p.restarts):
                delta = _initial_delta(shape, p.init, eps, ctx, run)
                history, rate, rounds = [], 0.0, 0
                for rounds in range(1, p.max_rounds + 1):
                    t1 = time.perf_counter()
                    pgd_pass(crafter, view, index, y, delta, walk, class_wise, p.batch_size, targets=labels if targeted else None)
                    acc, rate = success(delta)
                    entry = {"round": rounds, "acc": round(acc, 4), "seconds": round(time.perf_counter() - t1, 2)}
                    if targeted:
                        entry["target_rate"] = round(rate, 4)
                    history.append(entry)
                    ctx.log.info("error-max run %d, pass %d/%d: source accuracy %.4f, success rate %.4f", run + 1, rounds, p.max_rounds, acc, rate)
                    ctx.progress(run * p.max_rounds + rounds, p.restarts * p.max_rounds, acc=acc)
                    if rate >= p.target_error:
                        break
                run_stats = {"history": history, "rounds": rounds, "rate": rate}
                if p.restarts == 1:
                    kept = delta
                else:  # keep only the best so far (8 full-size δ of CIFAR-10 would be 4.9 GB)
                    score = _objective_per_row(model, view, index, y, labels, delta, p, class_wise, cl)
                    run_stats["objective"] = float(score.mean())
                    kept, kept_score = _keep_best(kept, kept_score, delta, score, p.restart_select, run)
                runs.append(run_stats)
            delta = kept
            acc_final, rate_final = success(delta)
        chosen = 0 if p.restarts == 1 else int(torch.bincount(kept_score[1], minlength=p.restarts).argmax())
        best = runs[chosen]
        loss_poisoned, _ = mean_loss_and_acc(model, poisoned(delta, y), p.amp, cl)
        self.source_model = model
        stats = {
            "mode": p.mode,
            "source_arch": p.source_arch,
            "source_train_seconds": source_stats["source_train_seconds"],
            "source_clean_acc": round(acc_clean, 4),
            "source_clean_loss": round(loss_clean, 4),
            "source_poisoned_loss": round(loss_poisoned, 4),
            "rounds": best["rounds"],
            "converged": rate_final >= p.target_error,
            "final_error": round(1.0 - acc_final, 4),
            "history": best["history"],
        }
        if targeted or p.direction != "maximize" or p.restarts > 1:
            stats.update({"target": p.target, "direction": p.direction, "success_rate": round(rate_final, 4)})
        if p.restarts > 1:
            stats.update({
                "restarts": p.restarts,
                "restart_select": p.restart_select,
                "chosen_run": chosen if p.restart_select == "set" else None,
                "run_objectives": [round(r["objective"], 6) for r in runs],
                "run_success_rates": [round(r["rate"], 4) for r in runs],
            })
        return Perturbation(delta.detach(), mode=p.mode, stats=stats)


def _initial_delta(shape: tuple, init: str, eps: float, ctx: AttackContext, run: int) -> "torch.Tensor":
    """δ₀ of run ``run``: zeros, U[−ε, ε], or ε·N(0, 1) clipped to ±ε (TAP's ``randn``)."""
    if init == "zeros":
        return torch.zeros(shape, device=ctx.device)
    g = ctx.generator(100 + run)
    if init == "uniform":
        return (torch.rand(shape, device=ctx.device, generator=g) * 2 - 1) * eps
    return (torch.randn(shape, device=ctx.device, generator=g) * eps).clamp(-eps, eps)


def _objective_per_row(model, view, index, y, labels, delta, p: ErrorMaxParams, class_wise: bool, channels_last: bool) -> "torch.Tensor":
    """What the PGD lowers, per row of δ: CE(f(x + δ), labels) when minimizing, −CE when
    maximizing (the TAP code's untargeted recipe uses −CE as its target loss); a class-wise
    row gets the mean over that class's images. No augmentation: the selection is exact."""
    from bench.device import autocast_for

    sign = 1.0 if p.direction == "minimize" else -1.0
    rows = delta.shape[0]
    sums = torch.zeros(rows, dtype=torch.float64, device=delta.device)
    counts = torch.zeros(rows, dtype=torch.float64, device=delta.device)
    with torch.inference_mode():
        for b in fixed_batches(len(index), p.batch_size, y.device):
            idx = index[b]
            row = y[idx] if class_wise else idx
            xb = view.batch(idx) + delta[row]
            if channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            with autocast_for(xb.device, p.amp):
                logits = model(xb).float()
            ce = torch.nn.functional.cross_entropy(logits, labels[idx], reduction="none").double()
            sums.index_add_(0, row, sign * ce)
            counts.index_add_(0, row, torch.ones_like(ce))
    return (sums / counts.clamp(min=1)).float()


def _keep_best(kept, kept_score, delta, score, how: str, run: int):
    """Fold run ``run`` into the kept δ: the whole run if its mean objective is the lowest so far
    (``set``, as TAP's ``_forge``), or per row where its objective is the lowest (``sample``).
    ``kept_score`` is (per-row objective of the kept δ, the run each row came from)."""
    origin = torch.full_like(score, run, dtype=torch.long)
    if kept is None:
        return delta, (score, origin)
    best, src = kept_score
    if how == "set":
        return (delta, (score, origin)) if float(score.mean()) < float(best.mean()) else (kept, kept_score)
    better = score < best
    kept[better] = delta[better]
    return kept, (torch.where(better, score, best), torch.where(better, origin, src))


for _name, (_cls, _base, _desc, _ref, _category, _defaults) in PRESETS.items():
    _recipe = _base.model_fields["source_train"].default.model_dump(exclude_defaults=True)
    _params = with_defaults(_base, _cls, f"`error-max` with the {_name} defaults: {_defaults}, source_train {_recipe}.", **_defaults)
    ATTACKS.register(
        _name, params=_params, description=_desc, reference=_ref, threat=ThreatModel("linf", "epsilon"),
        category=_category, preset_of="error-max",
    )(ErrorMaximizing)
