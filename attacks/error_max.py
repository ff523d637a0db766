"""``error-max``: error-maximizing noise ("PGD-20" in the EM paper, algorithms.md §1.4).

The source model is first trained on the *clean* data with the exploiter's own engine
(`bench.trainer.fit`, default settings = the EM code's 60-epoch recipe with crop+flip and a
cosine lr), then frozen; δ climbs the source's loss by signed PGD *ascent*, whole passes
over the data repeated without further model training until the source's error on x + δ
reaches ``target_error`` (0.9 sample-wise; 0.8 class-wise, on a 20% stratified subset with
T = 1 and the class-mean update of class-wise EM). The EM paper's Figure 1 shows that such
noise barely hurts an exploiter when sample-wise; it is the contrast that makes EM notable.
"""
from __future__ import annotations

import time
from typing import Any, ClassVar

from pydantic import Field

from attacks._inputs import CleanView, fixed_batches
from attacks._pgd import PGDStep, class_mean_update, frozen, pgd
from attacks._source import PGDParams, SourceParams, mean_loss_and_acc
from bench.attack import Attack, AttackContext
from bench.perturbation import Perturbation
from bench.threat import ThreatModel
from bench.train_config import TrainConfig
from registry import ATTACKS
from registry.lazy import lazy_import

torch = lazy_import("torch")


class ErrorMaxParams(SourceParams, PGDParams):
    """Params of error-maximizing noise; defaults follow the EM code's ``min-max`` scripts."""

    _BY_MODE: ClassVar[dict[str, dict[str, Any]]] = {
        "pgd_steps": {"sample": 20, "class": 1},
        "target_error": {"sample": 0.9, "class": 0.8},
    }

    target_error: float = Field(0.9, gt=0, le=1, description="stop once the source's error on x + δ reaches it (default: 0.9 sample-wise, 0.8 class-wise)")
    max_rounds: int = Field(20, ge=1, description="at most this many PGD passes over the data")
    source_train: TrainConfig = Field(
        default_factory=TrainConfig, description="how the source is trained on clean data first (default: the EM code's 60-epoch recipe)"
    )


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
        from bench.data import stratified_indices
        from bench.trainer import fit

        p: ErrorMaxParams = self.params
        dev = ctx.device
        x, y = train.x.to(dev), train.y.to(dev)
        n, k = len(train), train.num_classes
        eps = p.epsilon / 255.0
        class_wise = p.mode == "class"
        index = (
            stratified_indices(y, max(k, round(p.subset_fraction * n)), p.subset_seed).to(dev)
            if class_wise
            else torch.arange(n, device=dev)
        )

        t0 = time.perf_counter()
        model = p.build_source(ctx)
        cfg = p.source_train.model_copy(update={"eval_every": p.source_train.epochs})
        probe = train.subset(stratified_indices(train.y, min(n, 2048), 0))  # fit reports accuracy on a train slice
        res = fit(model, train, probe, cfg, seed=ctx.seed, device=dev)
        train_seconds = time.perf_counter() - t0
        ctx.log.info("error-max: source %s trained on clean data, train accuracy %.4f", p.source_arch, res.clean_acc_final)

        cl = p.use_channels_last(dev)
        view = CleanView(x, augment=False, padding=0, g=ctx.generator(1), channels_last=cl)
        delta = torch.zeros((k if class_wise else n, *x.shape[1:]), device=dev)
        step = PGDStep(p.pgd_steps, p.step_size / 255.0, eps, direction=1, amp=p.amp, channels_last=cl)
        batches = fixed_batches(len(index), p.batch_size, dev)

        def delta_of(idx):
            return delta[y[idx]] if class_wise else delta[idx]

        def poisoned():
            for b in batches:
                idx = index[b]
                yield view.batch(idx) + delta_of(idx), y[idx]

        loss_clean, acc_clean = mean_loss_and_acc(model, ((view.batch(index[b]), y[index[b]]) for b in batches), p.amp, cl)
        history, err, rounds = [], 1.0 - acc_clean, 0
        with frozen(model):
            for rounds in range(1, p.max_rounds + 1):
                t1 = time.perf_counter()
                for b in batches:
                    idx = index[b]
                    eta = pgd(model, view.batch(idx), delta_of(idx), y[idx], step)
                    if class_wise:
                        class_mean_update(delta, eta, y[idx], eps)
                    else:
                        delta[idx] = eta
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
            "source_train_seconds": round(train_seconds, 2),
            "source_clean_acc": round(acc_clean, 4),
            "source_clean_loss": round(loss_clean, 4),
            "source_poisoned_loss": round(loss_poisoned, 4),
            "rounds": rounds,
            "converged": err >= p.target_error,
            "final_error": round(err, 4),
            "history": history,
        }
        return Perturbation(delta.detach(), mode=p.mode, stats=stats)
