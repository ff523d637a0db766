"""ISS's named defenses: ``iss-gray``, ``iss-jpeg``, ``iss-jpeggray``, ``jpeggray`` (``docs/algorithms/erasers.md``).

Image Shortcut Squeezing (Liu et al., ICML 2023) is grayscale or JPEG-10 compression of the
training images, before crop and flip, with the test set left as it is. The filters are
`defenses.filters`'s ``grayscale`` and ``jpeg``; these names give them ISS's settings so a
leaderboard column reads as the papers' headings do:

==================  ==================================================================
``iss-gray``        ``grayscale`` on the train set only (ISS; ``grayscale`` itself grays
                    the test set too, as Going Grayscale)
``iss-jpeg``        ``jpeg`` at quality 10 on the train set only (the same defaults as ``jpeg``)
``iss-jpeggray``    both, in ISS's order: ``main.py --grayscale True --jpeg 10`` builds
                    Grayscale(3) then JPEG (``augmentations.py`` ``aug_train``)
``jpeggray``        both, in DUNE's order: JPEG-10 then Grayscale(3) (``train.py --defense jpeggray``)
==================  ==================================================================

Each is the composition of the existing filter classes, bit for bit; ``apply_to_test``
(default false, as ISS and DUNE) filters the clean test set the same way, as ISS's
``--ISS_both_train_test``. The registry imports this module only once ``"iss"`` is listed
in ``defenses.PLUGINS``.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from bench.api import DEFENSES, Defense
from defenses.filters import JPEG, Grayscale, GrayscaleParams, JPEGParams


class ISSGrayParams(GrayscaleParams):
    apply_to_test: bool = Field(False, description="also gray the clean test set (ISS: false; --ISS_both_train_test: true)")


@DEFENSES.register(
    "iss-gray",
    params=ISSGrayParams,
    description="ISS grayscale: PIL Grayscale(3) on the train set only",
    reference="Liu et al. ICML 2023 (ISS) augmentations.py aug_train, README 'Grayscale' column",
    category="filter",
    cost="one pass over the data before training",
)
class ISSGray(Grayscale):
    pass


class ISSJPEGParams(JPEGParams):
    quality: int = Field(10, ge=1, le=100, description="JPEG quality (ISS: 10)")
    apply_to_test: bool = Field(False, description="also compress the clean test set (ISS: false; --ISS_both_train_test: true)")


@DEFENSES.register(
    "iss-jpeg",
    params=ISSJPEGParams,
    description="ISS JPEG-10: JPEG quality 10 on the train set only",
    reference="Liu et al. ICML 2023 (ISS) augmentations.py aug_train, README 'JPEG-10' column",
    category="filter",
    cost="one pass over the data before training",
)
class ISSJPEG(JPEG):
    pass


ORDERS = ("gray-jpeg", "jpeg-gray")


class _JPEGGrayParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    quality: int = Field(10, ge=1, le=100, description="JPEG quality (ISS and DUNE: 10)")
    apply_to_test: bool = Field(False, description="also filter the clean test set (ISS and DUNE: false)")


class ISSJPEGGrayParams(_JPEGGrayParams):
    order: Literal[ORDERS] = Field("gray-jpeg", description="gray-jpeg: Grayscale(3) then JPEG (ISS aug_train) | jpeg-gray (DUNE)")


class DUNEJPEGGrayParams(_JPEGGrayParams):
    order: Literal[ORDERS] = Field("jpeg-gray", description="jpeg-gray: JPEG then Grayscale(3) (DUNE train.py) | gray-jpeg (ISS)")


class JPEGGray(Defense):
    """Grayscale and JPEG, composed from `defenses.filters`'s ``grayscale`` and ``jpeg``."""

    def __init__(self, params: _JPEGGrayParams):
        super().__init__(params)
        gray = Grayscale(GrayscaleParams(apply_to_test=params.apply_to_test))
        jpeg = JPEG(JPEGParams(quality=params.quality, apply_to_test=params.apply_to_test))
        self.steps = (gray, jpeg) if params.order == "gray-jpeg" else (jpeg, gray)

    def transform_train(self, x):
        for step in self.steps:
            x = step.transform_train(x)
        return x

    def transform_test(self, x):
        for step in self.steps:
            x = step.transform_test(x)
        return x


DEFENSES.register(
    "iss-jpeggray",
    params=ISSJPEGGrayParams,
    description="ISS grayscale + JPEG-10 in ISS's order (gray, then JPEG), train set only",
    reference="Liu et al. ICML 2023 (ISS) main.py --grayscale True --jpeg 10 (augmentations.py aug_train order)",
    category="filter",
    cost="one pass over the data before training",
)(JPEGGray)

DEFENSES.register(
    "jpeggray",
    params=DUNEJPEGGrayParams,
    description="JPEG-10 then grayscale (DUNE's jpeggray column), train set only",
    reference="DUNE (ICML 2026) train.py --defense jpeggray; ISS's two filters",
    category="filter",
    cost="one pass over the data before training",
)(JPEGGray)
