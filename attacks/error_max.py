"""``error-max``: error-maximizing noise ("PGD-20" in the EM paper; ``docs/algorithms/baselines.md``).

The source model is first trained on the *clean* data with the exploiter's own engine
(`attacks.source.train_on_clean`, default settings = the EM code's 60-epoch recipe with
crop+flip and a cosine lr), then frozen; δ climbs the source's loss by signed PGD *ascent*,
whole passes over the data repeated without further model training until the source's error
on x + δ reaches ``target_error`` (0.9 sample-wise; 0.8 class-wise, on a 20% stratified
subset with T = 1 and the class-mean update of class-wise EM). The EM paper's Figure 1 shows
that such noise barely hurts an exploiter when sample-wise; it is the contrast that makes EM
notable.
"""
from __future__ import annotations

import time
from typing import Any, ClassVar

from pydantic import Field

from attacks.delta import PGDParams, pgd_pass
from attacks.source import CleanSourceParams, frozen, mean_loss_and_acc, train_on_clean
from attacks.views import CleanView, fixed_batches
from bench.api import ATTACKS, Attack, AttackContext, Perturbation, ThreatModel, lazy_import

torch = lazy_import("torch")


class ErrorMaxParams(CleanSourceParams, PGDParams):
    """Params of error-maximizing noise; defaults follow the EM code's ``min-max`` scripts."""

    _BY_MODE: ClassVar[dict[str, dict[str, Any]]] = {
        "pgd_steps": {"sample": 20, "class": 1},
        "target_error": {"sample": 0.9, "class": 0.8},
    }

    target_error: float = Field(0.9, gt=0, le=1, description="stop once the source's error on x + δ reaches it (default: 0.9 sample-wise, 0.8 class-wise)")
    max_rounds: int = Field(20, ge=1, le=10_000, description="at most this many PGD passes over the data")


@ATTACKS.register(
    "error-max",
    params=ErrorMaxParams,
    description="Error-maximizing noise: PGD ascent on a source model trained on clean data, sample- or class-wise",
    reference="Huang et al. ICLR 2021 (EM), Fig. 1 min-max baseline; perturbation.py attack_type min-max",
    threat=ThreatModel("linf", "epsilon"),
    category="baseline",
)
class ErrorMaximizing(Attack):
    """Error-maximizing noise; the trained source model stays available as ``source_model``."""

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
        model, source_stats = train_on_clean(p, train, ctx)

        cl = p.use_channels_last(dev)
        view = CleanView(x, augment=False, padding=0, g=ctx.generator(1), channels_last=cl)
        delta = torch.zeros((k if class_wise else n, *x.shape[1:]), device=dev)
        walk = PGD(eps, p.step_size / 255.0, p.pgd_steps, direction=1, amp=p.amp, channels_last=cl)
        batches = fixed_batches(len(index), p.batch_size, dev)

        def poisoned():
            for b in batches:
                idx = index[b]
                yield view.batch(idx) + (delta[y[idx]] if class_wise else delta[idx]), y[idx]

        loss_clean, acc_clean = mean_loss_and_acc(model, ((view.batch(index[b]), y[index[b]]) for b in batches), p.amp, cl)
        history, err, rounds = [], 1.0 - acc_clean, 0
        with frozen(model):
            for rounds in range(1, p.max_rounds + 1):
                t1 = time.perf_counter()
                pgd_pass(model, view, index, y, delta, walk, class_wise, p.batch_size)
                _, acc = mean_loss_and_acc(model, poisoned(), p.amp, cl)
                err = 1.0 - acc
                history.append({"round": rounds, "acc": round(acc, 4), "seconds": round(time.perf_counter() - t1, 2)})
                ctx.log.info("error-max pass %d/%d: source error on poisoned data %.4f", rounds, p.max_rounds, err)
                ctx.progress(rounds, p.max_rounds, acc=acc)
                if err >= p.target_error:
                    break
        loss_poisoned, _ = mean_loss_and_acc(model, poisoned(), p.amp, cl)
        self.source_model = model
        stats = {
            "mode": p.mode,
            "source_arch": p.source_arch,
            "source_train_seconds": source_stats["source_train_seconds"],
            "source_clean_acc": round(acc_clean, 4),
            "source_clean_loss": round(loss_clean, 4),
            "source_poisoned_loss": round(loss_poisoned, 4),
            "rounds": rounds,
            "converged": err >= p.target_error,
            "final_error": round(err, 4),
            "history": history,
        }
        return Perturbation(delta.detach(), mode=p.mode, stats=stats)
