"""Progressive Staged Training: ``st``, ``st-cg``, ``st-full`` (Dang et al. 2023; ``docs/algorithms/staged.md``).

On unlearnable data a model first learns some real features and then gets trapped in the
perturbation shortcut, shallow layers first. ST watches for that with ACM (`defenses.st.acm`):
after every epoch it embeds the penultimate activations of a validation set V, a stratified
subset of the *poisoned* training set (100 images of each of the first 10 classes: 1,000
for CIFAR-10), and if ACM exceeds τ it counts a crossing (c ← c + 1), rolls the model and
the optimizer back to the last epoch that did not cross, and lowers the per-layer
learning-rate multipliers λ_l (`defenses.st.lr_rules`), shallow layers first and most. Layers
are `bench.models.blocks_of(model)`: the stem, each residual block, the head. Layer l
trains at the scheduled rate times ``lr_scale``·λ_l.

**Reconstruction.** The paper's ACM formula, its Eq. 5 (the λ rule), τ and β were lost from
its text and no code is public. What runs here is the reconstruction of ``docs/algorithms/staged.md``:
ACM = mean_{i≠j} ‖μ_i − μ_j‖ / (r_i + r_j) on a 2-D t-SNE embedding and λ_l = clip(1 −
β·c·(L − l + 1)/L, 0, 1). Both are swappable params (``acm_formula``, ``multiplier_rule``),
every result row carries ``"reconstruction": true`` with τ, β and the ACM history in its
``defense_report``, and the defaults of τ and β are harness choices explained at
`STParams`. `defenses.st.calibrate.calibrate` picks τ and β as the paper does, by the
accuracy on 20 clean images.

Also UNKNOWN in the paper and chosen here: a rolled-back epoch still counts toward the
epoch budget (it is a trained and discarded epoch); the optimizer state (momentum) is rolled
back with the model; a rolled-back epoch's model never counts as the peak.

Variants (paper Table I): ``st`` (lr 0.1); ``st-cg`` adds the CG colour augmentation
(`defenses.augment.color_augment`) and trains at twice the rate (the paper's lr 0.2 where
NT uses 0.1: ``lr_scale: 2``); ``st-full`` is ST-CG followed by a fine-tuning stage of
``finetune_epochs`` at ``finetune_lr`` with all layers at multiplier 1 and CG still on (the
paper gives neither number).

Cost per step is standard training; once per epoch ACM adds a forward pass over V and the
embedding (t-SNE of 1,000 points: seconds on a CPU; ``embedding: pca`` for milliseconds).
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from bench.api import DEFENSES, Defense, lazy_import
from bench.data import stratified_indices
from defenses.augment import ColorParams, color_augment
from defenses.st.acm import EMBEDDINGS, FORMULAS, acm
from defenses.st.lr_rules import RULES

torch = lazy_import("torch")


class STParams(BaseModel):
    """τ and β: the paper tunes both on 20 clean images and its values were lost.

    τ = 1.0 is the point where the reconstructed ACM says "separated": class centres are, on
    average, farther apart than the sum of the two classes' mean radii. It is a geometric
    default, not a tuned one. For scale, measured when written (convnet_cifar on
    cifar10-mini, lr 0.05, crop+flip, t-SNE of 50 poisoned training images per class): ACM
    rose from about 0.4 after the first epoch to 0.6-0.9 after six to eight, on clean data
    and on LSP, class-wise random (32/255) and MLP-source EM poisons alike. None of those
    shortcuts was learnt at that scale, and none crossed 1. Use
    `defenses.st.calibrate.calibrate` to choose τ and β for a given arch and data set.
    β = 0.5 stops the shallowest layer after two crossings and the head after 2·L.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    tau: float = Field(1.0, gt=0, description="ACM threshold τ (UNKNOWN in the paper)")
    beta: float = Field(0.5, gt=0, description="λ-rule hyperparameter β (UNKNOWN in the paper)")
    acm_formula: Literal[tuple(FORMULAS)] = Field("center-ratio", description="reconstructed ACM formula")
    multiplier_rule: Literal[tuple(RULES)] = Field("linear", description="reconstructed λ rule (Eq. 5)")
    embedding: Literal[tuple(EMBEDDINGS)] = Field("tsne", description="2-D embedding before ACM (paper: t-SNE)")
    perplexity: float = Field(30.0, gt=1, description="t-SNE perplexity (UNKNOWN; scikit-learn's default)")
    tsne_iters: int = Field(1000, ge=250, description="t-SNE iterations (UNKNOWN; scikit-learn's default)")
    val_per_class: int = Field(100, ge=2, description="V: poisoned training images per class (paper: 100 on CIFAR-10)")
    val_classes: int = Field(10, ge=2, description="V uses the first k classes (paper: 10)")
    lr_scale: float = Field(1.0, gt=0, le=100, description="multiplies the matrix lr (ST-CG: 2, the paper's 0.2 vs 0.1)")
    seed: int = Field(0, ge=0, le=2**32 - 1, description="seed of V's draw and of t-SNE")
    select_n: int = Field(
        20, ge=0, le=10_000,
        description="clean held-out images (the dataset's `holdout`) that pick the model ST ends with and fine-tunes "
        "from: the best of every epoch's model, rolled back or not (the paper's 20 clean images); 0: the last kept model",
    )
    min_mult: float = Field(0.0, ge=0, le=1, description="floor of every λ_l (0, the reconstruction's rule: layers may freeze for good)")
    calibration: str = Field(
        "", max_length=300,
        description="how τ and β were chosen (e.g. the calibration run that picked them); empty: uncalibrated defaults",
    )

    def needs_holdout(self) -> int:
        """Clean held-out images these params need from the dataset (checked before a run)."""
        return self.select_n


@DEFENSES.register(
    "st",
    params=STParams,
    description="Progressive Staged Training: ACM-triggered rollback + shallow-first lr decay (reconstructed ACM/λ rule)",
    reference="Dang et al. 2023, arXiv 2306.02064 (ST), Alg. 1",
    category="training",
    cost="1 pass per step + per epoch: ACM forward over V (1,000 images) and a t-SNE",
)
class ProgressiveStagedTraining(Defense):
    """ST: ACM-triggered rollback and shallow-to-deep per-layer learning-rate decay."""

    def __init__(self, params: STParams):
        super().__init__(params)
        self.count = 0
        self.history: list[dict] = []
        self.n_layers = 0
        self._stage = -1
        self.val_x = self.val_y = None
        self.measure = self._measure  # model -> ACM; replaceable, e.g. by a scripted sequence
        self.sel_x = self.sel_y = None
        self.best: dict | None = None  # the best model seen: {"score", "stage", "epoch", "state"}
        self.scores: list[dict] = []

    # -- V and ACM ------------------------------------------------------------------------
    def setup(self, model, train, num_classes):
        p = self.params
        y = train.y.cpu()
        first = torch.nonzero(y < p.val_classes).flatten()
        k = int(torch.unique(y[first]).numel())
        pick = first[stratified_indices(y[first], p.val_per_class * k, p.seed)].to(train.x.device)
        self.val_x, self.val_y = train.x[pick], train.y[pick]
        if p.select_n:
            h = self.holdout
            if h is None or len(h) < p.select_n:
                have = 0 if h is None else len(h)
                raise ValueError(f"st: select_n {p.select_n} needs that many clean held-out images, the dataset has {have}; "
                                 f"give the dataset `holdout: {p.select_n}` (or set select_n: 0)")
            sel = stratified_indices(h.y.cpu(), p.select_n, p.seed).to(h.x.device)
            self.sel_x, self.sel_y = h.x[sel], h.y[sel]

    # -- the model ST ends with: never below the best it has seen (on its clean images) --------
    def _consider(self, state) -> None:
        """Score this epoch's model (before any rollback) and keep it if it is the best yet;
        a tie goes to the later epoch (it has trained more)."""
        if self.sel_x is None:
            return
        import copy

        from bench.trainer import accuracy

        score = accuracy(state.model, self.sel_x, self.sel_y)
        self.scores.append({"stage": state.stage, "epoch": state.epoch, "select_acc": round(score, 4)})
        if self.best is None or score >= self.best["score"]:
            self.best = {"score": score, "stage": state.stage, "epoch": state.epoch, "state": copy.deepcopy(state.model.state_dict())}

    def on_train_end(self, model) -> bool:
        from bench.trainer import accuracy

        if self.best is None or self.best["score"] <= accuracy(model, self.sel_x, self.sel_y):
            return False
        model.load_state_dict(self.best["state"])
        return True

    def _measure(self, model) -> float:
        p = self.params
        return acm(model, self.val_x, self.val_y, p.acm_formula, p.embedding, p.seed, p.perplexity, p.tsne_iters)

    # -- per-layer rates ------------------------------------------------------------------
    def multipliers(self) -> list[float]:
        """λ_1..λ_L for the current crossing count, times ``lr_scale``."""
        lam = RULES[self.params.multiplier_rule](self.count, self.params.beta, self.n_layers)
        return [self.params.lr_scale * max(self.params.min_mult, m) for m in lam]

    def param_groups(self, model):
        from bench.models import blocks_of

        self._stage += 1
        blocks = blocks_of(model)
        groups = [list(b.parameters()) for b in blocks]
        n_grouped = sum(p.numel() for g in groups for p in g)
        n_model = sum(p.numel() for p in model.parameters())
        if n_grouped != n_model:
            raise ValueError(f"st: blocks_of({type(model).__name__}) covers {n_grouped} of {n_model} parameters")
        self.n_layers = len(blocks)
        if self._stage > 0 and self.best is not None:  # ST-Full fine-tunes the best model of the staged stage
            model.load_state_dict(self.best["state"])
        # the main stage starts from the current λ; a fine-tuning stage trains every layer at 1
        mults = self.multipliers() if self._stage == 0 else [1.0] * len(blocks)
        return [{"params": g, "lr_mult": m} for g, m in zip(groups, mults)]

    def on_epoch_end(self, state):
        self._consider(state)
        if state.stage > 0:  # ST-Full's fine-tuning stage: plain training
            return None
        import time

        t0 = time.perf_counter()
        value = float(self.measure(state.model))
        acm_seconds = time.perf_counter() - t0
        crossed = value > self.params.tau
        if crossed:
            self.count += 1
            for grp, m in zip(state.optimizer.param_groups, self.multipliers()):
                grp["lr_mult"] = m
        self.history.append(
            {
                "epoch": state.epoch,
                "acm": round(value, 4),
                "acm_seconds": round(acm_seconds, 3),
                "crossed": crossed,
                "count": self.count,
                "lr_mult": [round(g["lr_mult"], 6) for g in state.optimizer.param_groups],
            }
        )
        return "rollback" if crossed else "continue"

    def report(self) -> dict:
        p = self.params
        return {
            "st": {
                "reconstruction": True,
                "acm_formula": p.acm_formula,
                "multiplier_rule": p.multiplier_rule,
                "embedding": p.embedding,
                "tau": p.tau,
                "beta": p.beta,
                "lr_scale": p.lr_scale,
                "n_layers": self.n_layers,
                "val_size": 0 if self.val_y is None else len(self.val_y),
                "crossings": self.count,
                "acm_history": self.history,
                "min_mult": p.min_mult,
                "select_n": p.select_n,
                "best": None if self.best is None else {k: v for k, v in self.best.items() if k != "state"},
                "select_history": self.scores,
                "calibration": p.calibration or None,
            }
        }


class STCGParams(STParams, ColorParams):
    lr_scale: float = Field(2.0, gt=0, description="multiplies the matrix lr (paper: 0.2 for ST-CG vs 0.1)")


@DEFENSES.register(
    "st-cg",
    params=STCGParams,
    description="ST with the CG colour augmentation (jitter p 0.8 + grayscale p 0.2) at twice the lr",
    reference="Dang et al. 2023, arXiv 2306.02064 (ST), Table I",
    category="training",
    cost="as st, plus elementwise colour ops per batch",
)
class STCG(ProgressiveStagedTraining):
    def batch_transform(self, x, y, g):
        return color_augment(x, g, self.params), y


class STFullParams(STCGParams):
    finetune_epochs: int = Field(10, ge=1, description="fine-tuning epochs with CG (UNKNOWN in the paper)")
    finetune_lr: float = Field(0.01, gt=0, description="fine-tuning lr, cosine (UNKNOWN in the paper)")


@DEFENSES.register(
    "st-full",
    params=STFullParams,
    description="ST-CG, then fine-tuning of all layers with CG (the paper's full pipeline)",
    reference="Dang et al. 2023, arXiv 2306.02064 (ST), §III training pipeline",
    category="training",
    cost="as st-cg, plus finetune_epochs of standard-cost training",
)
class STFull(STCG):
    def extra_stages(self) -> list[dict]:
        return [{"epochs": self.params.finetune_epochs, "lr": self.params.finetune_lr}]
