"""``rem``: robust error-minimizing noise (REM, Fu et al. ICLR 2022; ``docs/algorithms/pgd_attacks.md``).

EM's noise is a shortcut for a model trained normally, but adversarial training at radius
ρ_a ≥ what the noise needs wipes it out. REM optimizes the noise against a source model that
is itself trained adversarially, and makes the noise work *under* that adversary: a min-min-max
problem,

    min_θ  E_T  min_{‖δ‖∞ ≤ ρ_u}  max_{‖η‖∞ ≤ ρ_a}  CE(f_θ(T(x + δ) + η), y),

with T a random crop + flip (the expectation over transformations, EOT, estimated with
``eot_samples`` draws). It is solved by alternation, one step per mini-batch (the reference's
``generate_robust_em.py``):

1. Noise: δ_b from a fresh random start, ``pgd_steps`` signed *descent* steps of ``step_size``
   on Σ_s CE(f(T_s(x + δ) + η_s), y), each η_s found anew by an inner PGD *ascent* of
   ``atk_steps`` × ``atk_step_size`` within ρ_a on T_s(x + δ) and held constant (its gradient
   passes straight to T_s(x + δ), as the code's ``(def_x * grad).sum().backward()``). The source
   is frozen (eval mode). δ is stored rounded to whole pixel levels (the code's int8).
2. Source: one SGD step on the inner adversary's attack of T(x + δ_b) (train mode), the
   learning rate decayed ×``lr_decay_rate`` every ``lr_decay_freq`` steps.

After ``train_steps`` steps, the whole training set's noise is regenerated once with the final
source. Both PGDs are `bench.pgd.pgd`: the inner adversary and the EOT average live in the
callable `_UnderAttack` that the outer PGD treats as its model.
"""
from __future__ import annotations

import math
import time
from typing import Any, ClassVar

from pydantic import Field, model_validator

from attacks.delta import RandomTransform
from attacks.em.params import with_defaults
from attacks.source import SourceParams, frozen
from attacks.views import BatchStream, CleanView, fixed_batches
from bench.api import ATTACKS, Attack, AttackContext, Perturbation, ThreatModel, lazy_import

torch = lazy_import("torch")

REM_REFERENCE = "Fu et al. ICLR 2022 (REM); fshp971/robust-unlearnable-examples generate_robust_em.py, scripts/cifar10/gen_rem.sh"

#: Part of every REM poison's cache key: bumped when the same params would give another δ.
REM_VERSION = "1"


class REMParams(SourceParams):
    """Params of robust error-minimizing noise; defaults are ``scripts/cifar10/gen_rem.sh``."""

    epsilon: float = Field(8.0, gt=0, le=255, description="ρ_u: L∞ budget of the noise in /255 units (code: --pgd-radius 8)")
    pgd_steps: int = Field(10, ge=1, le=10_000, description="noise PGD steps per batch (code: --pgd-steps 10)")
    step_size: float = Field(1.6, gt=0, le=255, description="noise PGD step in /255 units (code: --pgd-step-size 1.6; default ε/5)")
    random_start: bool = Field(True, description="noise PGD starts at U[−ρ_u, ρ_u] (code: --pgd-random-start), else at δ = 0")
    atk_epsilon: float = Field(
        4.0, ge=0, le=255, description="ρ_a: radius of the inner adversary in /255 units (code: --atk-pgd-radius 4); 0 disables it"
    )
    atk_steps: int = Field(10, ge=0, le=10_000, description="inner adversary's PGD steps (code: --atk-pgd-steps 10); 0 disables it")
    atk_step_size: float = Field(
        0.8, gt=0, le=255, description="inner adversary's step in /255 units (code: --atk-pgd-step-size 0.8; default ρ_a/5)"
    )
    atk_random_start: bool = Field(True, description="inner adversary starts at U[−ρ_a, ρ_a] (code: --atk-pgd-random-start)")
    eot_samples: int = Field(5, ge=1, le=100, description="draws of T per noise step, gradients summed (code: --samp-num 5)")
    augment: bool = Field(True, description="T = random crop + flip (code: the CIFAR train transform); false: T = identity")
    crop_padding: int = Field(4, ge=0, le=64, description="T's crop padding in px (code: RandomCrop(32, 4))")
    train_steps: int = Field(5000, ge=1, le=10_000_000, description="source steps, one mini-batch each (code: --train-steps 5000)")
    batch_size: int = Field(128, ge=2, le=1 << 20, description="mini-batch of the source steps and of the noise PGD (code: --batch-size 128)")
    lr: float = Field(0.1, gt=0, le=10, description="source SGD learning rate (code: --lr 0.1)")
    lr_decay_rate: float = Field(0.1, gt=0, le=1, description="lr × this every lr_decay_freq steps (code: --lr-decay-rate 0.1)")
    lr_decay_freq: int = Field(2000, ge=1, le=10_000_000, description="steps between lr decays (code: --lr-decay-freq 2000)")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum (code: 0.9)")
    weight_decay: float = Field(5e-4, ge=0, le=1, description="SGD weight decay (code: 5e-4)")
    perturb_freq: int = Field(
        1, ge=1, le=10_000_000, description="recompute the batch's noise every this many steps; between, the stored noise is used (code: --perturb-freq 1)"
    )
    quantize_noise: bool = Field(True, description="store δ rounded to whole pixel levels, as the code's int8 noise; the model steps use it")
    report_freq: int = Field(1000, ge=1, le=10_000_000, description="steps per history entry (code: --report-freq 1000)")

    #: Unset step sizes are their radius divided by these (the script's 1.6 of 8 and 0.8 of 4).
    _STEP_DIVISORS: ClassVar[dict[str, tuple[str, float]]] = {"step_size": ("epsilon", 5), "atk_step_size": ("atk_epsilon", 5)}

    @model_validator(mode="before")
    @classmethod
    def _step_defaults(cls, data: Any) -> Any:
        """Fill unset step sizes from their radius, so the recorded params show the steps used."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for step, (radius, divisor) in cls._STEP_DIVISORS.items():
            r = data.get(radius, cls.model_fields[radius].default)
            if step not in data and isinstance(r, (int, float)) and not isinstance(r, bool) and r > 0:
                data[step] = r / divisor
        return data

    def lr_at(self, step: int) -> float:
        return self.lr * self.lr_decay_rate ** (step // self.lr_decay_freq)


class _UnderAttack:
    """What the noise PGD sees as its model: for each of ``samples`` fresh draws of T, the
    source's logits on T(p) + η, with η the inner adversary's PGD on T(p) (a constant: the
    gradient reaches p through T only); the draws' logits are concatenated, so CE against the
    labels repeated ``samples`` times is the EOT average."""

    def __init__(self, model, y, transform, inner, samples: int, g):
        self.model, self.y, self.transform, self.inner, self.samples, self.g = model, y, transform, inner, samples, g

    def __call__(self, p: "torch.Tensor") -> "torch.Tensor":
        from bench.pgd import pgd

        outs = []
        for _ in range(self.samples):
            t = self.transform(p) if self.transform is not None else p
            if self.inner is not None:
                x_adv, _ = pgd(self.model, t.detach(), self.y, self.inner, generator=self.g)
                t = t + (x_adv - t).detach()  # the value of the attacked point, the gradient of T(p)
            outs.append(self.model(t))
        return torch.cat(outs)


class NoiseStep:
    """REM's noise for one batch against a source model: a fresh PGD descent (from U[−ρ_u, ρ_u]
    or 0) on the EOT loss under the inner adversary (`_UnderAttack`), stored rounded to whole
    pixel levels if ``quantize_noise``. The model is frozen (eval mode) while it runs."""

    def __init__(self, p: REMParams, g_transform: "torch.Generator", g_attack: "torch.Generator", channels_last: bool = False):
        from bench.pgd import PGD

        self.p, self.g = p, g_attack
        self.transform = RandomTransform("crop", p.crop_padding, True, g_transform) if p.augment else None
        self.adversary = None
        if p.atk_steps > 0 and p.atk_epsilon > 0:
            start = "uniform" if p.atk_random_start else "none"
            self.adversary = PGD(p.atk_epsilon / 255.0, p.atk_step_size / 255.0, p.atk_steps, direction=1, start=start, amp=p.amp, channels_last=channels_last)
        self.walk = PGD(
            p.epsilon / 255.0, p.step_size / 255.0, p.pgd_steps, direction=-1, start="uniform" if p.random_start else "none",
            amp=p.amp, channels_last=channels_last,
        )
        self.limit = math.floor(p.epsilon + 1e-9)  # whole levels that fit the budget

    def __call__(self, model: "torch.nn.Module", x: "torch.Tensor", y: "torch.Tensor") -> "torch.Tensor":
        from bench.pgd import pgd

        s = self.p.eot_samples
        with frozen(model):
            seen = _UnderAttack(model, y, self.transform, self.adversary, s, self.g)
            _, eta = pgd(seen, x, y, self.walk, loss_fn=lambda logits, yb: torch.nn.functional.cross_entropy(logits, yb.repeat(s)), generator=self.g)
        if self.p.quantize_noise:
            eta = (eta * 255).round().clamp(-self.limit, self.limit) / 255
        return eta


@ATTACKS.register(
    "rem",
    params=REMParams,
    description="Robust error-minimizing noise: min-min-max with an adversarially trained source and EOT over crop+flip",
    reference=REM_REFERENCE,
    threat=ThreatModel("linf", "epsilon"),
    category="error-minimizing",
    version=REM_VERSION,
)
class RobustErrorMinimizing(Attack):
    """REM; the trained source model stays available as ``source_model``."""

    source_model = None

    def generate(self, train, ctx: AttackContext) -> Perturbation:
        from bench.device import autocast_for
        from bench.pgd import pgd
        from bench.trainer import sgd

        p: REMParams = self.params
        dev = ctx.device
        x, y = train.x.to(dev), train.y.to(dev)
        n = len(train)
        cl = p.use_channels_last(dev)

        model = p.build_source(ctx)
        params = list(model.parameters())
        opt = sgd(params, params[0].device, lr=p.lr, momentum=p.momentum, weight_decay=p.weight_decay)
        view = CleanView(x, augment=False, padding=0, g=ctx.generator(1), channels_last=cl)
        stream = BatchStream(n, p.batch_size, shuffle=True, g=ctx.generator(2), device=dev)
        noise = NoiseStep(p, ctx.generator(5), ctx.generator(3), cl)
        adversary, g_train = noise.adversary, ctx.generator(4)
        t_train = RandomTransform("crop", p.crop_padding, True, ctx.generator(6)) if p.augment else None
        delta = torch.zeros((n, *x.shape[1:]), device=dev)

        def defend(idx: "torch.Tensor") -> None:
            delta[idx] = noise(model, view.batch(idx), y[idx])

        history: list[dict] = []
        window_acc, window_loss, window_n = 0.0, 0.0, 0
        t_start = t_window = time.perf_counter()
        for step in range(p.train_steps):
            lr = p.lr_at(step)
            for grp in opt.param_groups:
                grp["lr"] = lr
            idx = next(stream)
            if (step + 1) % p.perturb_freq == 0:
                defend(idx)
            yb = y[idx]
            inp = (view.batch(idx) + delta[idx]).clamp(0.0, 1.0)
            if t_train is not None:
                inp = t_train(inp)
            if adversary is not None:
                with frozen(model):
                    inp, _ = pgd(model, inp, yb, adversary, generator=g_train)
            model.train()
            if cl:
                inp = inp.contiguous(memory_format=torch.channels_last)
            with autocast_for(dev, p.amp):
                logits = model(inp).float()
            loss = torch.nn.functional.cross_entropy(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            window_acc += float((logits.argmax(1) == yb).sum())
            window_loss += float(loss.detach()) * len(idx)
            window_n += len(idx)
            if (step + 1) % p.report_freq == 0 or step + 1 == p.train_steps:
                now = time.perf_counter()
                entry = {
                    "step": step + 1, "lr": lr, "def_acc": round(window_acc / window_n, 4),
                    "def_loss": round(window_loss / window_n, 4), "seconds": round(now - t_window, 2),
                }
                history.append(entry)
                ctx.log.info("rem step %d/%d: source accuracy on attacked noised batches %.4f", step + 1, p.train_steps, entry["def_acc"])
                ctx.progress(step + 1, p.train_steps, acc=entry["def_acc"])
                window_acc, window_loss, window_n, t_window = 0.0, 0.0, 0, now
        train_seconds = time.perf_counter() - t_start

        t_regen = time.perf_counter()
        for b in fixed_batches(n, p.batch_size, dev):  # the whole set, once, with the final source
            defend(b)
        regen_seconds = time.perf_counter() - t_regen
        self.source_model = model
        stats = {
            "mode": "sample",
            "source_arch": p.source_arch,
            "train_steps": p.train_steps,
            "train_seconds": round(train_seconds, 2),
            "seconds_per_step": round(train_seconds / p.train_steps, 4),
            "regenerate_seconds": round(regen_seconds, 2),
            "final_def_acc": history[-1]["def_acc"],
            "source_poisoned_acc": round(_accuracy(model, view, delta, y, p.batch_size, p.amp, cl), 4),
            # the same images without δ: the gap is what δ adds to the source's fit (not all of it a
            # shortcut: a model trained on clean data gains some too, docs/algorithms/pgd_attacks.md)
            "source_clean_acc": round(_accuracy(model, view, None, y, p.batch_size, p.amp, cl), 4),
            "history": history,
        }
        return Perturbation(delta, mode="sample", stats=stats)


def _accuracy(model, view, delta, y, batch_size: int, amp: bool, channels_last: bool) -> float:
    """The final source's accuracy on clip(x + δ), or on x if ``delta`` is None (eval mode, no
    augmentation, no adversary): the two side by side show how much of its fit δ carries."""
    from attacks.source import mean_loss_and_acc

    def batches():
        for b in fixed_batches(len(y), batch_size, y.device):
            xb = view.batch(b)
            yield (xb if delta is None else (xb + delta[b]).clamp(0.0, 1.0)), y[b]

    return mean_loss_and_acc(model, batches(), amp, channels_last)[1]


class _REMCPUBase(REMParams):
    """`rem-cpu`'s source is the width-8 convnet: ``source_model_kwargs`` defaults to
    ``{width: 8}`` while the source is ``convnet_cifar`` (and to ``{}`` for any other source,
    so ``source_arch: mlp`` or a matrix's ``source_archs`` still work). Its 3 inner steps are
    ρ_a/3 each, so they still reach ρ_a."""

    _STEP_DIVISORS: ClassVar[dict[str, tuple[str, float]]] = {"step_size": ("epsilon", 5), "atk_step_size": ("atk_epsilon", 3)}

    @model_validator(mode="before")
    @classmethod
    def _narrow_convnet(cls, data: Any) -> Any:
        if isinstance(data, dict) and "source_model_kwargs" not in data:
            arch = data.get("source_arch", cls.model_fields["source_arch"].default)
            data = {**data, "source_model_kwargs": {"width": 8} if arch == "convnet_cifar" else {}}
        return data


#: name -> (params class name, base, description, default overrides)
PRESETS: dict[str, tuple[str, type[REMParams], str, dict[str, Any]]] = {
    "rem-cpu": (
        "REMCPUParams", _REMCPUBase,
        "REM at CPU scale: a width-8 convnet source, 400 steps, 5 noise steps, 3 inner steps, 1 EOT draw",
        {
            "source_arch": "convnet_cifar", "train_steps": 400, "lr_decay_freq": 160, "report_freq": 100,
            "pgd_steps": 5, "atk_steps": 3, "atk_step_size": 4 / 3, "eot_samples": 1,
        },
    ),
}

for _name, (_cls, _base, _desc, _defaults) in PRESETS.items():
    _params = with_defaults(_base, _cls, f"`rem` with the {_name} defaults: {_defaults}, source_model_kwargs {{width: 8}} for convnet_cifar.", **_defaults)
    ATTACKS.register(
        _name, params=_params, description=_desc, reference=REM_REFERENCE, threat=ThreatModel("linf", "epsilon"),
        category="error-minimizing", preset_of="rem", version=REM_VERSION,
    )(RobustErrorMinimizing)
