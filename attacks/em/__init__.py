"""Error-minimizing noise (EM, Huang et al. ICLR 2021) and Going Grayscale's ULEO variants.

One implementation (`attacks.em.loop.min_min`), one params model (`attacks.em.params`),
several registered names: ``em`` is the general attack; the presets are the rows the papers
report, each just ``em`` with other defaults, so the leaderboard reads like the papers.

``gray`` and ``augment`` are independent booleans (the released code ties them together).
With ``gray``, the model steps see Gray3(Aug(x)) + δ, PGD minimizes CE(f(Gray3(clip(Aug(x) +
δ)))) and δ is kept equal across the three channels; the published poison is δ added to the
*colour* original. How δ is added (the paper's signed x + δ or the code's rectified
max(δ, 0)) is the harness's ``apply`` setting, not the attack's. The whole account, with
every paper/code disagreement, is ``docs/algorithms/em.md``.
"""
from __future__ import annotations

from attacks.em.params import EM_REFERENCE, EM_VERSION, PRESETS, EMParams, with_defaults
from bench.api import ATTACKS, Attack, AttackContext, Perturbation, ThreatModel

__all__ = ["EMParams", "ErrorMinimizing", "PRESETS"]


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
        from attacks.em.loop import min_min

        res = min_min(train, self.params, ctx)
        self.source_model = res.model
        stats = {"mode": self.params.mode, "source_arch": self.params.source_arch, **res.stats}
        return Perturbation(res.delta, mode=self.params.mode, stats=stats)


for _name, (_cls, _desc, _ref, _defaults) in PRESETS.items():
    _params = with_defaults(EMParams, _cls, f"`em` with the {_name} defaults: {_defaults}.", **_defaults)
    ATTACKS.register(
        _name, params=_params, description=_desc, reference=_ref, threat=ThreatModel("linf", "epsilon"),
        category="error-minimizing", preset_of="em", version=EM_VERSION,
    )(ErrorMinimizing)
