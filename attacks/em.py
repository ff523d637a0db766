"""Error-minimizing noise (EM, Huang et al. ICLR 2021) and Going Grayscale's ULEO variants.

One implementation (`attacks._em_core.min_min`), one params model, several registered names:
``em`` is the general attack; the presets below are the rows the papers report, each just
``em`` with other defaults, so the leaderboard reads like the papers.

Defaults are the official code's (algorithms.md §1.2 sample-wise, §1.3 class-wise, §2.1
ULEO-Gray/-Augs/-GrayAugs, §2.2 MLP source). Every place where a paper and the code disagree
is one param, with the code's behaviour as the default:

==========================  ==================================  =================================
param                       code (default)                      paper
==========================  ==================================  =================================
``init``                    ``zeros``                           ``uniform`` (GG Alg. 1: random δ₀)
``reset_model_each_round``  ``false``: model + optimizer carry  ``true`` (GG §3.3: from scratch)
``train_unit``              ``batches``: M mini-batches         ``epochs`` (GG Alg. 1: M epochs)
``clip_in_train_step``      ``false``: x + δ unclipped          ``true``
``gray`` / ``augment``      tied (one ``--GRAYAUG`` flag)        independent (ULEO-Gray, -Augs)
``gray_step``               ``sum_of_signs`` (up to 3α)         ``sign_of_sum`` (α)
``stop_test_gray``          ``false``: colour stop test         ``true`` (the model trains on gray)
``stop_error`` class-wise   0.01 (CIFAR-10 script)              0.1 (EM paper)
``source_model_kwargs``     ``{sigmoid_output: true}`` for      ``{}`` (a plain MLP)
                            the GG MLP (``em-mlp``)
==========================  ==================================  =================================

``gray`` and ``augment`` are independent booleans (the released code ties them together).
With ``gray``, the model steps see Gray3(Aug(x)) + δ, PGD minimizes CE(f(Gray3(clip(Aug(x) +
δ)))) and δ is kept equal across the three channels; the published poison is δ added to the
*colour* original. How δ is added (the paper's signed x + δ or the code's rectified
max(δ, 0)) is the harness's ``apply`` setting (§1.5), not the attack's.
"""
from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field, create_model
from pydantic.fields import FieldInfo

from attacks._source import PGDParams, SourceParams
from bench.attack import Attack, AttackContext
from bench.perturbation import Perturbation
from bench.threat import ThreatModel
from registry import ATTACKS

EM_REFERENCE = "Huang et al. ICLR 2021 (EM); HanxunH/Unlearnable-Examples perturbation.py"
GG_REFERENCE = "Liu et al. 2021, Going Grayscale; liuzrcc/ULEGrayAug perturbation.py"

#: Part of every EM poison's cache key: bumped when the same params would give another δ.
#: 2: sample-wise model steps visit the samples in a fixed seeded order, not storage order.
EM_VERSION = "2"


class EMParams(SourceParams, PGDParams):
    """Params of error-minimizing noise; defaults are the official code's CIFAR-10 settings."""

    _BY_MODE: ClassVar[dict[str, dict[str, Any]]] = {"pgd_steps": {"sample": 20, "class": 1}}

    train_steps: int = Field(10, ge=1, description="model steps M per round (mini-batches, or epochs with train_unit: epochs)")
    train_unit: Literal["batches", "epochs"] = Field("batches", description="what M counts: batches (code) or epochs (GG Alg. 1)")
    stop_error: float = Field(0.01, gt=0, lt=1, description="λ: stop once the source's error on the poisoned set is below it")
    max_rounds: int = Field(100, ge=1, description="give up after this many rounds (the stats record whether λ was reached)")
    lr: float = Field(0.1, gt=0, description="source SGD learning rate, constant during generation")
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    grad_clip: float | None = Field(5.0, gt=0, description="source grad-norm clip (code: 5); null disables")
    init: Literal["zeros", "uniform"] = Field("zeros", description="δ₀: zeros (code) or U[-ε, ε] (GG Alg. 1)")
    reset_model_each_round: bool = Field(False, description="re-initialize the source model and optimizer every round (GG §3.3)")
    clip_in_train_step: bool = Field(False, description="clip x + δ to [0, 1] in the model steps and stop test (code: no)")
    gray: bool = Field(False, description="grayscale defender (ULEO-Gray): gray model inputs, channel-equal δ")
    augment: bool = Field(False, description="crop(pad)+flip drawn fresh for the clean image at every step (ULEO-Augs)")
    crop_padding: int = Field(4, ge=0, description="augment: padding of the random crop")
    gray_step: Literal["sum_of_signs", "sign_of_sum"] = Field(
        "sum_of_signs", description="gray PGD step: Σ_c sign(g_c) as the code (up to 3α) or sign(Σ_c g_c) (α)"
    )
    stop_test_gray: bool = Field(False, description="gray: run the stop test on gray inputs (code: colour)")


@ATTACKS.register(
    "em",
    params=EMParams,
    description="Error-minimizing noise (min-min), sample- or class-wise; every paper/code variant as a param",
    reference=EM_REFERENCE,
    threat=ThreatModel("linf", "epsilon"),
    category="error-minimizing",
    version=EM_VERSION,
)
class ErrorMinimizing(Attack):
    """Error-minimizing noise; the trained source model stays available as ``source_model``."""

    source_model = None

    def generate(self, train, ctx: AttackContext) -> Perturbation:
        from attacks._em_core import min_min

        res = min_min(train, self.params, ctx)
        self.source_model = res.model
        stats = {"mode": self.params.mode, "source_arch": self.params.source_arch, **res.stats}
        return Perturbation(res.delta, mode=self.params.mode, stats=stats)


def with_defaults(base: type[BaseModel], name: str, doc: str, **defaults: Any) -> type[BaseModel]:
    """A subclass of ``base`` whose fields in ``defaults`` default differently (same checks)."""
    fields = {k: (base.model_fields[k].annotation, FieldInfo.merge_field_infos(base.model_fields[k], default=v)) for k, v in defaults.items()}
    return create_model(name, __base__=base, __doc__=doc, __module__=__name__, **fields)


#: name -> (params class name, description, reference, default overrides of `EMParams`)
PRESETS: dict[str, tuple[str, str, str, dict[str, Any]]] = {
    "em-sample": ("EMSampleParams", "ULEO: sample-wise error-minimizing noise (EM Table 1 Δs)", EM_REFERENCE, {"mode": "sample"}),
    "em-class": ("EMClassParams", "Class-wise error-minimizing noise on a 20% subset (EM Table 1 Δc)", EM_REFERENCE, {"mode": "class"}),
    "uleo-gray": ("ULEOGrayParams", "ULEO-Gray: channel-equal EM optimized through grayscale", GG_REFERENCE, {"gray": True}),
    "uleo-augs": ("ULEOAugsParams", "ULEO-Augs: EM optimized on freshly augmented (crop+flip) images", GG_REFERENCE, {"augment": True}),
    "uleo-grayaugs": (
        "ULEOGrayAugsParams", "ULEO-GrayAugs: channel-equal EM through Gray3(Aug(x)), robust to gray exploiters",
        GG_REFERENCE, {"gray": True, "augment": True},
    ),
    "em-mlp": (
        "EMMLPParams", "ULEO generated on the Going Grayscale MLP (transfers to CNNs, GG Table 6)",
        GG_REFERENCE, {"source_arch": "mlp", "source_model_kwargs": {"sigmoid_output": True}},
    ),
}

for _name, (_cls, _desc, _ref, _defaults) in PRESETS.items():
    _params = with_defaults(EMParams, _cls, f"`em` with the {_name} defaults: {_defaults}.", **_defaults)
    ATTACKS.register(
        _name, params=_params, description=_desc, reference=_ref, threat=ThreatModel("linf", "epsilon"),
        category="error-minimizing", preset_of="em", version=EM_VERSION,
    )(ErrorMinimizing)
