"""Checks that run before any work and need more than the config: every model name a matrix
references (its archs, and the models its plugins' params name, e.g. an attack's
``source_arch`` and ``source_model_kwargs``) exists and builds, and ``poison_classes`` names
classes of the data. A failure is a `PreflightError` with one line; the run then exits 2
having written nothing.

The driver side (`model_refs`, `check_classes`) imports no torch; `check_models` (worker side,
run with the dataset job) imports timm and builds each distinct referenced model once.
"""
from __future__ import annotations

import difflib
import json
from typing import TYPE_CHECKING

from bench.config import canonical_json

if TYPE_CHECKING:
    from bench.config import Matrix
    from bench.records import DatasetFacts


class PreflightError(ValueError):
    """Something a run needs is missing (an arch, a model kwarg, a class name); one line."""


def model_refs(m: "Matrix") -> tuple[tuple[str, str, str], ...]:
    """(arch, canonical JSON kwargs, where) of every model the matrix's plugins reference.

    A params model declares its references with a ``model_refs()`` method returning
    ``[(field, arch, kwargs)]`` (`attacks.source.SourceParams` does)."""
    from registry import ATTACKS, DEFENSES

    out: dict[tuple[str, str], str] = {}
    specs = []
    for b, sub in enumerate(m.matrices()):
        pre = f"blocks[{b}]." if m.blocks is not None else ""
        for i, a in enumerate(sub.attacks):
            has_source = "source_arch" in ATTACKS.get(a.name).params.model_fields
            for src in sub.source_archs if (sub.source_archs and has_source) else [None]:
                spec = a if src is None else a.model_copy(update={"params": {**a.params, "source_arch": src}})
                specs.append((ATTACKS, spec, f"{pre}attacks[{i}] ({a.name}" + (f", source {src})" if src else ")")))
        specs += [(DEFENSES, d, f"{pre}defenses[{i}][{j}] ({d.name})") for i, stack in enumerate(sub.defenses) for j, d in enumerate(stack)]
    holdouts = {b: min(d.holdout for d in sub.datasets) for b, sub in enumerate(m.matrices()) if sub.datasets}
    for reg, spec, where in specs:
        params = reg.validate(spec.name, spec.params)
        need = getattr(params, "needs_holdout", None)
        block = int(where[len("blocks["):].split("]")[0]) if where.startswith("blocks[") else 0
        if callable(need) and need() > holdouts.get(block, 0):
            raise PreflightError(f"{where}: needs {need()} clean held-out images; give every dataset `holdout: {need()}` "
                                 f"(or set the defense's select_n: 0)")
        check = getattr(params, "preflight", None)
        if callable(check):
            try:
                check()
            except ValueError as exc:
                raise PreflightError(f"{where}: {exc}") from None
        refs = getattr(params, "model_refs", None)
        for field, arch, kwargs in refs() if callable(refs) else ():
            out.setdefault((arch, canonical_json(kwargs)), f"{where}: params.{field}")
    return tuple((arch, kw, where) for (arch, kw), where in out.items())


def check_models(archs: tuple[str, ...], refs: tuple[tuple[str, str, str], ...]) -> None:
    """Every exploiter arch exists; every referenced model exists and builds with its kwargs."""
    from bench.models import create_model, list_models
    from registry import RegistryError

    known = set(list_models())
    for arch in archs:
        _known(arch, known, "archs")
    for arch, kwargs, where in refs:
        _known(arch, known, where)
        try:
            create_model(arch, num_classes=10, **json.loads(kwargs))
        except (TypeError, ValueError, RegistryError) as exc:
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise PreflightError(f"{where}: model {arch!r} cannot be built with kwargs {kwargs} ({msg})") from None


def _known(arch: str, known: set[str], where: str) -> None:
    if arch not in known:
        close = difflib.get_close_matches(arch, known, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise PreflightError(f"{where}: unknown model {arch!r}{hint} (see `uebench list models`)")


def check_classes(m: "Matrix", facts: "DatasetFacts") -> None:
    """``poison_classes`` must name classes of every dataset."""
    for name in {c for sub in m.matrices() for c in sub.poison_classes or ()}:
        if name not in facts.classes:
            close = difflib.get_close_matches(name, facts.classes, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise PreflightError(
                f"poison_classes: {name!r} is not a class of {facts.name}{hint} (classes: {', '.join(facts.classes)})"
            )
