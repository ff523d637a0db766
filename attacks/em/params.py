"""Params of error-minimizing noise and the presets the papers report (`attacks.em`).

Defaults are the official code's CIFAR-10 settings; every place where a paper and the code
disagree is one param, with the code's behaviour as the default (table in
``docs/algorithms/em.md``):

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
"""
from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field, create_model
from pydantic.fields import FieldInfo

from attacks.delta import PGDParams
from attacks.source import SourceParams

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
