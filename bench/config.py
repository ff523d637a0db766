"""The matrix config: datasets × attacks × defense stacks × archs × seeds, validated up front.

Every model is a `bench.schema.StrictModel`: a typo is an error naming the field and the
allowed keys, never a silently ignored key; YAML booleans are not numbers and infinities are
refused. `parse_matrix` validates the whole matrix, including every plugin name and its
params against the plugin's own model, before any work starts (`bench.configfile` reads the
YAML file).

YAML shorthand: an attack or a defense may be written as a bare name (``random``), or as
``{name, params, label}``; a defense entry may be a list of those (a stack, applied in
order). ``epsilon: 8`` means 8/255.
"""
from __future__ import annotations

import difflib
import hashlib
import json
from typing import Any

from pydantic import BaseModel, Field, PrivateAttr, ValidationError, field_validator, model_validator

from bench.perturbation import ApplyConfig
from bench.schema import StrictModel
from bench.train_config import RobustEvalConfig, TrainConfig
from registry import ATTACKS, DATASETS, DEFENSES, RegistryError, one_line

MAX_SEED = 2**32 - 1
BLOCK_FIELDS = ("datasets", "attacks", "defenses", "archs", "seeds", "poison_ratio", "poison_ratios", "poison_classes",
                "clean_baseline", "source_archs")
"""The fields of a matrix a block may set: what is crossed, not how cells train."""
"""Seeds are drawn into numpy (mod 2**32) and offset for torch generators: keep them below this."""


class ConfigError(ValueError):
    """A config is invalid; the message is one line naming the field and the fix."""


_Strict = StrictModel


def canonical_json(obj: Any) -> str:
    """Key-sorted, compact JSON: the one serialization hashed and written to result rows."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False, default=str)


def short_hash(obj: Any, n: int = 12) -> str:
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:n]


class PluginSpec(_Strict):
    """A plugin by name plus its params (validated against the plugin's own model)."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)
    label: str | None = Field(None, description="display name in the leaderboard")

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, v: Any) -> Any:
        return {"name": v} if isinstance(v, str) else v

    @field_validator("label")
    @classmethod
    def _printable(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if not v.strip():
            raise ValueError("must not be blank (leave it out to use the plugin's name)")
        if any(ch in v for ch in "|\n\r\t`"):
            raise ValueError("must not contain '|', '`', tabs or line breaks (it is a table cell of the leaderboard)")
        return v

    def display(self, defaults: dict[str, Any]) -> str:
        """``label``, else the name plus the params that differ from the plugin's defaults."""
        if self.label:
            return self.label
        diff = {k: v for k, v in self.params.items() if defaults.get(k, object()) != v}
        if not diff:
            return self.name
        return f"{self.name}[{','.join(f'{k}={_fmt(v)}' for k, v in sorted(diff.items()))}]"


def _fmt(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


class AttackSpec(PluginSpec):
    pass


class DefenseSpec(PluginSpec):
    pass


class DatasetSpec(_Strict):
    """A dataset plus the deterministic stratified subset taken from it."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)
    n_train: int | None = Field(None, ge=2, le=10**9, description="stratified train subset (null: all)")
    n_test: int | None = Field(None, ge=1, le=10**9, description="stratified test subset (null: all)")
    subset_seed: int = Field(0, ge=0, le=MAX_SEED)
    holdout: int = Field(
        0, ge=0, le=100_000,
        description="clean training images withheld from training and never poisoned, for defenses that use a few clean "
        "images (ST's model selection, as its paper's 20); drawn before n_train, never from the test set",
    )

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, v: Any) -> Any:
        return {"name": v} if isinstance(v, str) else v


class Matrix(_Strict):
    """A whole benchmark run. Cells = datasets × attacks × defenses × archs × seeds."""

    name: str = Field("run", pattern=r"^[A-Za-z0-9_.-]+$")
    datasets: list[DatasetSpec] = Field(default_factory=list)
    attacks: list[AttackSpec] = Field(default_factory=list)
    defenses: list[list[DefenseSpec]] = Field(default_factory=lambda: [[DefenseSpec(name="standard")]], min_length=1)
    archs: list[str] = Field(default_factory=list)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    poison_ratio: float = Field(1.0, gt=0, le=1)
    poison_ratios: list[float] | None = Field(
        None, min_length=1, description="several poison ratios, each in (0, 1] (instead of poison_ratio)"
    )
    poison_classes: list[str] | None = Field(
        None, min_length=1, description="poison only images of these classes (names), e.g. [bird]"
    )
    clean_baseline: bool = Field(
        False, description="also train on just the clean part of each partially poisoned set (EM Table 2's D_c)"
    )
    source_archs: list[str] | None = Field(
        None, min_length=1, description="source models: each attack with a source_arch param runs once per entry"
    )
    train: TrainConfig = Field(default_factory=TrainConfig)
    apply: ApplyConfig = Field(default_factory=ApplyConfig)
    robust: RobustEvalConfig | None = Field(None, description="also measure FGSM / PGD robust accuracy")
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N | mps")
    data_root: str | None = Field(None, description="where datasets live (overridden by --data-root)")
    blocks: list[dict[str, Any]] | None = Field(
        None, min_length=1,
        description="experiments of one matrix: each block overrides the cross-product fields (datasets, attacks, defenses, "
        "archs, seeds, poison ratios and classes, clean_baseline, source_archs) and adds its cells; training settings are shared",
    )
    _subs: list["Matrix"] = PrivateAttr(default_factory=list)

    @field_validator("defenses", mode="before")
    @classmethod
    def _stacks(cls, v: Any) -> Any:
        return [d if isinstance(d, list) else [d] for d in v] if isinstance(v, list) else v

    @field_validator("defenses")
    @classmethod
    def _no_empty_stack(cls, v: list) -> list:
        for i, stack in enumerate(v):
            if not stack:
                raise ValueError(f"entry {i} is an empty stack; write standard for plain training")
        return v

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[int]) -> list[int]:
        bad = [s for s in v if not 0 <= s <= MAX_SEED]
        if bad:
            raise ValueError(f"every seed must be in 0..{MAX_SEED}, got {bad}")
        return _unique(v, "seeds")

    @field_validator("archs", "source_archs")
    @classmethod
    def _archs(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and any(not a.strip() for a in v):
            raise ValueError("model names must not be blank")
        return v if v is None else _unique(v, "archs")

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        import re

        if re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", v):
            return v
        raise ValueError("must be auto, cpu, cuda, cuda:N or mps")

    @model_validator(mode="after")
    def _blocks(self) -> "Matrix":
        """Each block is a matrix of its own (the top level's fields, its overrides), checked
        like one; without blocks the top level must name datasets, attacks and archs."""
        if self.blocks is None:
            for f in ("datasets", "attacks", "archs"):
                if not getattr(self, f):
                    raise ValueError(f"{f}: List should have at least 1 item")
            return self
        base = self.model_dump(mode="python", exclude={"blocks"}, exclude_unset=True)
        subs = []
        for i, block in enumerate(self.blocks):
            bad = sorted(set(block) - set(BLOCK_FIELDS) - {"label"})
            if bad:
                raise ValueError(f"blocks[{i}]: {', '.join(bad)}: not a block field (allowed: {', '.join(BLOCK_FIELDS)}, label)")
            try:
                subs.append(Matrix.model_validate({**base, **{k: v for k, v in block.items() if k != "label"}}))
            except ValidationError as exc:
                raise ValueError(f"blocks[{i}]: {_matrix_error(exc)}") from None
        self._subs = subs
        return self

    def matrices(self) -> list["Matrix"]:
        """The cross products this matrix is made of: itself, or one per block."""
        return list(self._subs) if self.blocks is not None else [self]

    def block_labels(self) -> list[str]:
        """The name of each of `matrices()`, for ``--only block=…``: a block's ``label``, else
        its position (``0``, ``1``, …); ``""`` for a matrix without blocks."""
        if self.blocks is None:
            return [""]
        return [str(b.get("label") or i) for i, b in enumerate(self.blocks)]

    @model_validator(mode="after")
    def _plugins(self) -> "Matrix":
        """Resolve every plugin name and validate its params now, before any work."""
        for i, d in enumerate(self.datasets):
            _check(DATASETS, d.name, d.params, f"datasets[{i}]")
        for i, a in enumerate(self.attacks):
            _check(ATTACKS, a.name, a.params, f"attacks[{i}]")
        for i, stack in enumerate(self.defenses):
            for j, d in enumerate(stack):
                _check(DEFENSES, d.name, d.params, f"defenses[{i}][{j}]")
        labels = [self.attack_label(a) for a in self.attacks]
        dup = sorted({x for x in labels if labels.count(x) > 1})
        if dup:
            raise ValueError(f"attacks: duplicate entries {dup}; give them distinct params or a label")
        stacks = [self.defense_label(st) for st in self.defenses]
        dup = sorted({x for x in stacks if stacks.count(x) > 1})
        if dup:
            raise ValueError(f"defenses: duplicate entries {dup}; give them distinct params or a label")
        self._check_poisoning()
        return self

    def _check_poisoning(self) -> None:
        """Partial, per-class and transfer settings: ranges and contradictions, one line each."""
        if self.poison_ratios is not None:
            if self.poison_ratio != 1.0:
                raise ValueError("poison_ratio and poison_ratios: give one of them, not both")
            bad = [r for r in self.poison_ratios if not 0 < r <= 1]
            if bad:
                raise ValueError(f"poison_ratios: every ratio must be in (0, 1], got {bad}")
            if len(set(self.poison_ratios)) != len(self.poison_ratios):
                raise ValueError("poison_ratios: duplicate ratios")
        if self.clean_baseline and self.poison_classes is None and all(r == 1.0 for r in self.ratios()):
            raise ValueError("clean_baseline: needs a poison ratio < 1 or poison_classes (else no clean part is left)")
        if self.source_archs is not None:
            with_source = [a for a in self.attacks if "source_arch" in ATTACKS.get(a.name).params.model_fields]
            if not with_source:
                raise ValueError("source_archs: no attack in `attacks` has a source_arch param (training-free attacks have no source model)")
            for i, a in enumerate(self.attacks):
                if a in with_source and "source_arch" in a.params:
                    raise ValueError(f"attacks[{i}].params.source_arch: remove it, or remove source_archs (both pick the source model)")

    def ratios(self) -> list[float]:
        """The poison ratios of the matrix, in config order."""
        return list(self.poison_ratios) if self.poison_ratios is not None else [self.poison_ratio]

    def attack_label(self, a: AttackSpec) -> str:
        return a.display(ATTACKS.get(a.name).defaults())

    def defense_label(self, stack: list[DefenseSpec]) -> str:
        return "+".join(d.display(DEFENSES.get(d.name).defaults()) for d in stack)


def _unique(v: list, field: str) -> list:
    dup = sorted({str(x) for x in v if v.count(x) > 1})
    if dup:
        raise ValueError(f"duplicate entries {dup}")
    return v


def _check(reg, name: str, params: dict, where: str) -> None:
    try:
        reg.validate(name, params)
    except RegistryError as exc:
        raise ValueError(f"{where}: {exc}") from None


def parse_matrix(raw: dict, where: str = "config") -> Matrix:
    try:
        return Matrix.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{where}: {_matrix_error(exc)}") from None


def _matrix_error(exc: ValidationError) -> str:
    msg = one_line(exc)
    first = exc.errors()[0]
    if first["type"] == "extra_forbidden":
        loc = [str(p) for p in first["loc"]]
        model = _model_at(Matrix, first["loc"][:-1])
        names = sorted(model.model_fields) if model is not None else []
        close = difflib.get_close_matches(loc[-1], names, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        msg = f"{'.'.join(loc)}: unknown field{hint} (allowed: {', '.join(names)})"
    return msg


def _model_at(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The pydantic model a validation error's location points into (list indices skipped)."""
    import typing

    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        found = None
        stack = [field.annotation]
        while stack:
            t = stack.pop()
            if isinstance(t, type) and issubclass(t, BaseModel):
                found = t
                break
            stack.extend(typing.get_args(t))
        if found is None:
            return None
        model = found
    return model
