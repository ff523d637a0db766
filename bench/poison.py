"""Making one poison (worker side): generate δ or read it from the cache, publish, validate.

`make_poison` returns a `PoisonRecord`: the published training set plus `PoisonFacts`, what
a result row reports about it (declared and measured budget, the attack's stats). The
attack works on its own copy of the training set; what it returns is checked
(`check_perturbation`) before it is cached, what the cache returns is checked again before
it is used (a hash-consistent but malformed entry is regenerated like a corrupt one), and the
published images are validated against the pristine clean set, whose fingerprint is known:
an attack that changed its input in place, or the labels, fails its cells and nobody
else's. Any failure is a `PoisonError` with one line.

An additive δ is cached as ``{"delta"}`` with meta ``mode``; a class-wise convolution
(`FilterPerturbation`) as ``{"kernels"}`` with meta ``kind: "filter"``, ``mode`` and
``normalize``, and is validated through its ``filter`` threat model with those kernels.
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.attack import AttackContext, threat_of
from bench.config import canonical_json
from bench.data import ImageData, Splits, stratified_indices
from bench.device import device_name, seed_everything
from bench.perturbation import (
    AnyPerturbation,
    ApplyConfig,
    FilterPerturbation,
    Perturbation,
    PerturbationError,
    apply_perturbation,
    check_perturbation,
)
from bench.plan import PoisonTask, attack_params
from bench.provenance import plugin_code_hash
from bench.records import INDEX, PERTURBATION, DatasetFacts, PoisonFacts
from bench.threat import ThreatModelError, validate_poison
from registry import ATTACKS, DATASETS
from registry.lazy import lazy_import

if TYPE_CHECKING:
    import torch

    from bench.cache import Cache
    from bench.config import DatasetSpec
else:
    torch = lazy_import("torch")

log = logging.getLogger("uebench.poison")

class PoisonError(RuntimeError):
    """A poison could not be made, or what the attack made breaks the contract; one line."""


@dataclass
class PoisonRecord:
    """A published poison: the training split as published, plus its facts."""

    splits: Splits
    facts: PoisonFacts
    gen_seconds: float = 0.0
    generated: int = 0  # perturbations this call generated to make it
    notes: list[str] = field(default_factory=list)


def load_dataset(spec: "DatasetSpec", root: Path) -> Splits:
    """Load a dataset, withhold its clean ``holdout`` images from the training pool, and take
    its deterministic stratified subsets."""
    splits = DATASETS.create(spec.name, **spec.params).load(root)
    train, test, holdout = splits.train, splits.test, None
    if spec.holdout:
        held = stratified_indices(train.y, spec.holdout, spec.subset_seed + 1)
        rest = torch.ones(len(train), dtype=torch.bool)
        rest[held] = False
        holdout, train = train.subset(held), train.subset(torch.nonzero(rest).flatten())
    if spec.n_train is not None and spec.n_train < len(train):
        train = train.subset(stratified_indices(train.y, spec.n_train, spec.subset_seed))
    if spec.n_test is not None and spec.n_test < len(test):
        test = test.subset(stratified_indices(test.y, spec.n_test, spec.subset_seed))
    out = Splits(splits.name, train, test, dict(splits.info), holdout)
    out.info["sha256"] = out.fingerprint()
    out.info["fingerprint"] = out.info["sha256"][:16]
    return out


def facts_of(key: str, clean: Splits) -> DatasetFacts:
    return DatasetFacts(key, clean.name, clean.info["sha256"], len(clean.train), len(clean.test), tuple(clean.train.classes))


def poisoned_index(task: PoisonTask, train: ImageData) -> "torch.Tensor":
    """The fixed poisoned-index set: a seeded stratified ``poison_ratio`` share of the
    eligible images (all, or those of ``poison_classes``), sorted."""
    y = train.y.cpu()
    if task.poison_classes:
        ids = torch.tensor([train.classes.index(c) for c in task.poison_classes])
        eligible = torch.nonzero(torch.isin(y, ids)).flatten()
    else:
        eligible = torch.arange(len(y))
    n = max(1, round(task.poison_ratio * len(eligible)))
    return eligible[stratified_indices(y[eligible], n, task.seed)]


def declared_facts(task: PoisonTask) -> PoisonFacts:
    """The facts a row can state without the poison (its declared threat): for failed rows."""
    if task.clean_only:
        return PoisonFacts("none", None, poison_ratio=task.poison_ratio)
    threat = threat_of(task.attack.name)
    params = ATTACKS.validate(task.attack.name, task.attack.params)
    budget = threat.budget(params)
    return PoisonFacts(threat.describe(params), None if math.isinf(budget) else budget, poison_ratio=task.poison_ratio,
                       source_arch=str(getattr(params, "source_arch", "") or ""))


# -- generating δ -----------------------------------------------------------------------------
def _generate(task: PoisonTask, clean: Splits, device, on_round=None) -> tuple[dict, dict]:
    """Run the attack on its own copy of the training set: (tensors, meta) for the cache."""
    name = task.attack.name
    attack = ATTACKS.create(name, **task.attack.params)
    ctx = AttackContext(
        device=device, seed=task.seed, num_classes=clean.num_classes, img_shape=tuple(clean.train.x.shape[1:]),
        progress=on_round or (lambda *a, **k: None),
    )
    seed_everything(task.seed)
    pert = attack.generate(clean.train.copy(), ctx)
    check_perturbation(name, pert, clean.train)
    if clean.fingerprint() != clean.info["sha256"]:
        raise PoisonError(f"attack {name!r}: the clean dataset changed while it ran (it must not touch data it was not given)")
    meta = {
        "mode": pert.mode,
        "stats": _jsonable(pert.stats, name),
        "attack": name,
        "params": attack_params(task.attack),
        "source_arch": attack.source_arch or "",
        "dataset": clean.name,
        "n_train": len(clean.train),
        "device": device_name(device),
        "code": plugin_code_hash(ATTACKS.get(name)),
    }
    if isinstance(pert, FilterPerturbation):
        meta.update(kind="filter", normalize=pert.normalize)
        return {"kernels": pert.kernels.detach().float().cpu().contiguous()}, meta
    return {"delta": pert.delta.detach().float().cpu().contiguous()}, meta


def _jsonable(obj: Any, name: str) -> Any:
    import json

    try:
        return json.loads(canonical_json(obj))
    except ValueError as exc:
        raise PoisonError(f"attack {name!r}: Perturbation.stats must be JSON-serializable ({exc})") from None


def _perturbation(task: PoisonTask, tensors: dict, meta: dict, clean: Splits) -> AnyPerturbation:
    """The cached δ (or kernels) as a checked perturbation (PerturbationError if the entry is malformed)."""
    kind, stats_ok = meta.get("kind", "additive"), isinstance(meta.get("stats", {}), dict)
    if kind == "filter":
        if "kernels" not in tensors or meta.get("mode") != "class" or not isinstance(meta.get("normalize"), str) or not stats_ok:
            raise PerturbationError("cache entry of kind filter lacks its kernels tensor, its class mode, its normalize or its stats")
        pert: AnyPerturbation = FilterPerturbation(tensors["kernels"], "class", meta["normalize"], meta.get("stats", {}))
    elif kind != "additive":
        raise PerturbationError(f"cache entry has an unknown kind {kind!r}")
    elif "delta" not in tensors or meta.get("mode") not in ("sample", "class") or not stats_ok:
        raise PerturbationError("cache entry lacks its delta tensor, its mode or its stats")
    else:
        pert = Perturbation(tensors["delta"], mode=meta["mode"], stats=meta.get("stats", {}))
    check_perturbation(task.attack.name, pert, clean.train)
    return pert


def _cached_delta(task, clean, cache, device, on_round, regenerate, notes) -> tuple[AnyPerturbation, dict, str | None, int, float]:
    """(perturbation, meta, cache key, generated, seconds): from the cache, made once if missing."""
    fp = clean.info["sha256"]
    if cache is None:
        t0 = time.perf_counter()
        tensors, meta = _generate(task, clean, device, on_round)
        return _perturbation(task, tensors, meta, clean), meta, None, 1, time.perf_counter() - t0
    spec = task.perturbation_spec(fp)
    make = lambda: _generate(task, clean, device, on_round)
    for attempt in range(2):
        entry, created = cache.get_or_create(PERTURBATION, spec, make, force=regenerate and attempt == 0)
        try:
            pert = _perturbation(task, entry.tensors, entry.meta, clean)
        except PerturbationError as exc:
            if created or attempt:
                raise PoisonError(str(exc)) from None
            log.warning("cache: %s/%s is malformed (%s); regenerating it", PERTURBATION, entry.key[:16], exc)
            cache.remove(PERTURBATION, entry.key)
            continue
        if not created:
            _note_code_change(task, entry.meta, entry.key, notes)
        return pert, entry.meta, entry.key, int(created), (entry.manifest.get("seconds") or 0.0) if created else 0.0
    raise AssertionError("unreachable")


def _note_code_change(task: PoisonTask, meta: dict, key: str, notes: list[str]) -> None:
    entry = ATTACKS.get(task.attack.name)
    old, now = meta.get("code"), plugin_code_hash(entry)
    if old and now and old != now:
        notes.append(
            f"attack {task.attack.name!r}: cached poison {key[:16]} was made by other code than is installed now "
            f"(code {old[:8]}, now {now[:8]}); if its output changed, bump the plugin's version (now {entry.version!r}) "
            f"or rerun with --regenerate {task.attack.name}"
        )


# -- publishing -------------------------------------------------------------------------------
def make_poison(
    task: PoisonTask,
    apply: ApplyConfig,
    clean: Splits,
    cache: "Cache | None",
    device,
    on_round: Callable | None = None,
    regenerate: bool = False,
) -> PoisonRecord:
    """Publish one poison: δ and the index set from the cache (made once if missing), then
    apply (ratio / classes via the fixed index set), quantize and validate."""
    fp = clean.info["sha256"]
    mask, index_key = None, None
    if task.partial:
        make_index = lambda: ({"index": poisoned_index(task, clean.train)}, {"n_train": len(clean.train)})
        if cache is None:
            index = make_index()[0]["index"]
        else:
            entry, _ = cache.get_or_create(INDEX, task.index_spec(fp), make_index)
            index, index_key = entry.tensors.get("index"), entry.key
            if index is None or index.dtype != torch.int64 or (len(index) and int(index.max()) >= len(clean.train)):
                raise PoisonError(f"cache: index entry {entry.key[:16]} is malformed; run `uebench cache gc`")
        mask = torch.zeros(len(clean.train), dtype=torch.bool)
        mask[index] = True
    n_poisoned = len(clean.train) if mask is None else int(mask.sum())
    ratio = task.poison_ratio if not task.poison_classes else round(n_poisoned / len(clean.train), 6)
    poison_info: dict = {"index": index_key[:16] if index_key else None, "n_poisoned": n_poisoned, "poison_ratio": ratio}

    if task.clean_only:
        published = clean.train.subset(torch.nonzero(~mask).flatten())
        facts = PoisonFacts("none", None, 0.0, 0.0, None, canonical_json({"poison": {**poison_info, "withheld": n_poisoned}}), "", ratio)
        return PoisonRecord(Splits(clean.name, published, clean.test, clean.info, clean.holdout), facts)

    notes: list[str] = []
    try:
        pert, meta, pkey, generated, seconds = _cached_delta(task, clean, cache, device, on_round, regenerate, notes)
        published = apply_perturbation(clean.train, pert, apply, mask)
        threat = threat_of(task.attack.name)
        params = ATTACKS.validate(task.attack.name, task.attack.params)
        measured = validate_poison(task.attack.name, threat, params, clean.train, published, pert=pert)
    except (PerturbationError, ThreatModelError) as exc:
        raise PoisonError(str(exc)) from None
    budget = threat.budget(params)
    poison_info["perturbation"] = pkey[:16] if pkey else None
    poison_info["device"] = meta.get("device")  # where it was made: a cached poison may come from another run
    facts = PoisonFacts(
        threat=threat.describe(params),
        epsilon=None if math.isinf(budget) else budget,
        linf=measured.linf,
        l2=measured.l2,
        psnr=None if math.isinf(measured.psnr) else measured.psnr,
        attack_stats=canonical_json({**pert.stats, "poison": poison_info}),
        source_arch=meta.get("source_arch", ""),
        poison_ratio=ratio,
    )
    return PoisonRecord(Splits(clean.name, published, clean.test, clean.info, clean.holdout), facts, seconds, generated, notes)
