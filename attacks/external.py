"""``external`` / ``external-l2``: evaluate a poison made by another codebase.

The poisoned training set is read from an ``.npz`` (``x`` uint8 N×H×W×C, aligned with the
clean training set, optional ``y``) or from a folder of PNGs in APBench's layout
(``<idx>.png`` for every training index), matched to the clean dataset of the matrix (same
count, same image size, same labels where given), and turned into the perturbation
δ = (x′ − x) / 255. The harness then publishes and validates it like any other attack's:
against the declared budget (L∞ ``epsilon`` in /255 for ``external``, L2 ``l2_budget`` on
the [0, 1] scale for ``external-l2``), so a poison that breaks its budget fails its cells.

``sha256`` pins the file's content (for a folder: of its PNG names and bytes) and is part of
the cache key; `uebench export poison` prints the value for the files it writes. Without
it the row's attack stats record the hash seen and that the input was not pinned. Publish
with ``apply: {mode: signed}`` (the default): it reproduces x′ exactly.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from bench.api import ATTACKS, Attack, AttackContext, Perturbation, ThreatModel, lazy_import
from bench.export import content_hash

torch = lazy_import("torch")


class ExternalPoisonError(ValueError):
    """The external poison cannot be matched to the clean training set; one line."""


class ExternalParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    path: str = Field(min_length=1, description="an .npz (x uint8 NHWC, optional y) or a folder of <idx>.png")
    format: Literal["auto", "npz", "png"] = Field("auto", description="auto: npz for a file, png for a folder")
    epsilon: float = Field(8.0, gt=0, le=255, description="declared L∞ budget in /255 units (checked by the harness)")
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$", description="expected sha256 of the content (pins it; part of the cache key)")
    origin: str = Field("", max_length=200, description="what made the poison (e.g. the other codebase and attack), recorded in the stats")


    def preflight(self) -> None:
        """Checked before a run starts: the poison is where the params say."""
        path = Path(self.path).expanduser()
        if not path.exists():
            raise ExternalPoisonError(f"params.path: {path} does not exist (an .npz or a folder of <idx>.png)")


class ExternalL2Params(ExternalParams):
    epsilon: float | None = Field(None, description="unused by the L2 variant")
    l2_budget: float = Field(1.0, gt=0, le=100, description="declared per-image L2 budget on the [0, 1] scale")


def read_poisoned(p: ExternalParams, n: int, shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray | None, str]:
    """(x′ uint8 N×H×W×C, y′ or None, content sha256) of the external poison."""
    path = Path(p.path).expanduser()
    fmt = p.format if p.format != "auto" else ("png" if path.is_dir() else "npz")
    if fmt == "npz":
        if not path.is_file():
            raise ExternalPoisonError(f"external poison {path}: no such file")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        try:
            with np.load(path, allow_pickle=False) as a:
                x = a["x"]
                y = a["y"] if "y" in a.files else None
        except (ValueError, KeyError, OSError) as exc:
            raise ExternalPoisonError(f"external poison {path}: not an npz with an 'x' array ({type(exc).__name__}: {exc})") from None
    else:
        from PIL import Image

        if not path.is_dir():
            raise ExternalPoisonError(f"external poison {path}: not a folder of <idx>.png")
        files = [path / f"{i}.png" for i in range(n)]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise ExternalPoisonError(f"external poison {path}: {len(missing)} of the {n} images are missing (first: {missing[0]})")
        extra = len(list(path.glob("*.png"))) - n
        if extra:
            raise ExternalPoisonError(f"external poison {path}: {extra} more PNGs than the {n} training images; is it the same dataset and subset?")
        digest = content_hash(files, path)
        x = np.stack([np.asarray(Image.open(f).convert("RGB" if shape[0] == 3 else "L")) for f in files])
        y = None
    if x.ndim == 3:
        x = x[..., None]
    want = (n, shape[1], shape[2], shape[0])
    if x.dtype != np.uint8 or tuple(x.shape) != want:
        got = f"{x.dtype} {tuple(x.shape)}"
        raise ExternalPoisonError(f"external poison {path}: expected uint8 images of shape {want} (N, H, W, C) for this dataset, got {got}")
    if p.sha256 and digest != p.sha256:
        raise ExternalPoisonError(f"external poison {path}: content sha256 {digest[:16]}… differs from the pinned {p.sha256[:16]}…")
    return x, y, digest


class ExternalPoison(Attack):
    def generate(self, train, ctx: AttackContext) -> Perturbation:
        p: ExternalParams = self.params
        x_clean = train.x.permute(0, 2, 3, 1).numpy()
        x, y, digest = read_poisoned(p, len(train), tuple(train.x.shape[1:]))
        if y is not None and not np.array_equal(y.astype(np.int64), train.y.numpy()):
            raise ExternalPoisonError(f"external poison {p.path}: its labels differ from the clean training set's (another order or subset?)")
        delta = (torch.from_numpy(x.astype(np.int16) - x_clean.astype(np.int16)).permute(0, 3, 1, 2).float() / 255.0).contiguous()
        stats = {"sha256": digest, "pinned": bool(p.sha256), "origin": p.origin, "changed": int((delta != 0).flatten(1).any(1).sum())}
        return Perturbation(delta, mode="sample", stats=stats)


ATTACKS.register(
    "external", params=ExternalParams, threat=ThreatModel("linf", "epsilon"), category="external",
    description="A poisoned training set made elsewhere (npz or <idx>.png folder), matched to the clean set, L∞-checked",
    reference="APBench poison layout (lafeat/apbench); any codebase that exports aligned uint8 images",
)(ExternalPoison)
ATTACKS.register(
    "external-l2", params=ExternalL2Params, threat=ThreatModel("l2", "l2_budget"), category="external",
    description="As external, checked against a per-image L2 budget (for L2 attacks such as LSP or AR)",
    reference="APBench poison layout (lafeat/apbench)",
)(ExternalPoison)
