"""One generic plugin registry, in the style of timm's ``_registry.py``/``_factory.py``.

A plugin is a name bound to a factory (a class) plus a pydantic params model and metadata.
`register` is a decorator; `list` takes fnmatch wildcards; `create` validates the params
*before* any work starts and then builds the plugin. Duplicate names raise (a silent
overwrite would make a leaderboard lie). An unknown name raises with the closest names.

**Contracts.** A registry may name a contract (``"module:attribute"``, imported on the first
registration, so the registry itself stays free of the harness): an object with
``check(entry)`` that rejects a registration that breaks the plugin kind's rules (the wrong
base class, a missing threat model, an unknown keyword) with one line naming the plugin and
the fix. The check runs at registration, so a broken plugin fails when it is imported, not
halfway through a benchmark.

**Discovery is explicit and lazy.** On first use a registry imports the modules its
built-in package lists in ``PLUGINS`` (helper modules of the package are not imported),
then the modules named by its entry-point group (``uebench.attacks`` …), so third-party
plugins appear once their distribution is installed and are credited to it (``source``).
"""
from __future__ import annotations

import difflib
import fnmatch
import importlib
import importlib.metadata
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

T = TypeVar("T")


class RegistryError(ValueError):
    """A plugin could not be found, registered or configured. The message is one line."""


class NoParams(BaseModel):
    """Params model of a plugin that takes none."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class Entry(Generic[T]):
    """What a registry knows about one plugin."""

    name: str
    factory: Callable[..., T]
    params: type[BaseModel]
    description: str
    kind: str = "plugin"
    reference: str = ""
    version: str = "1"
    source: str = "builtin"
    module: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def validate(self, params: dict[str, Any] | BaseModel | None = None) -> BaseModel:
        """Params as the plugin's pydantic model; raises RegistryError with a one-line message."""
        if isinstance(params, self.params):
            return params
        if params is not None and not isinstance(params, dict):
            raise RegistryError(f"{self.label}: params must be a mapping of field: value, got {type(params).__name__}")
        for name, value in dict(params or {}).items():
            problem = value_problem(self.params, name, value)
            if problem:
                raise RegistryError(f"{self.label}: {name}: {problem}")
        try:
            return self.params.model_validate(dict(params or {}))
        except ValidationError as exc:
            raise RegistryError(f"{self.label}: {one_line(exc)}") from None

    @property
    def label(self) -> str:
        return f"{self.kind} {self.name!r}"

    def defaults(self) -> dict[str, Any]:
        """The params a plugin takes when given none; fields without a default (a required
        ``path``, say) are left out."""
        try:
            return self.params().model_dump()
        except ValidationError:
            return {n: f.get_default(call_default_factory=True) for n, f in self.params.model_fields.items() if not f.is_required()}


_NUMBER_TYPES = ("int", "float")
MAX_INT = 2**53
"""Largest integer magnitude a config or params value may have (beyond it, seeds and sizes are typos)."""


def value_problem(model: type[BaseModel], name: str, value: Any) -> str | None:
    """Why ``value`` must not go into field ``name`` of ``model``, beyond its own validation:
    a boolean where the field expects a number (YAML's ``true`` is not 1), a NaN or infinite
    float, an integer too large to mean anything. None if it may."""
    field = model.model_fields.get(name)
    if field is None:
        return None
    ann = str(field.annotation)
    if isinstance(value, bool):
        takes_bool = "bool" in ann or field.annotation is Any or ann == "typing.Any"
        if not takes_bool and any(t in ann for t in _NUMBER_TYPES):
            return f"expected a number, got {value!r}"
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return f"must be a finite number, got {value!r}"
    if isinstance(value, int) and abs(value) > MAX_INT:
        return f"is out of range (|value| <= 2**53), got {value}"
    return None


def one_line(exc: ValidationError) -> str:
    """Condense a pydantic error into one line naming each field and what is allowed."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        elif err["type"] != "missing" and not isinstance(err.get("input"), (dict, list)):
            msg = f"{msg} (got {_short_repr(err['input'])})"
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


def _short_repr(v: Any, n: int = 60) -> str:
    r = repr(v)
    return r if len(r) <= n else r[: n - 1] + "…"


def _resolve(path: str) -> Any:
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


class Registry(Generic[T]):
    """Named plugins of one kind (attack, defense, dataset, executor)."""

    def __init__(self, kind: str, builtin_package: str | None = None, group: str | None = None, contract: str | None = None):
        self.kind = kind
        self.builtin_package = builtin_package
        self.group = group or f"uebench.{kind}s"
        self.contract_path = contract
        self._contract: Any = None
        self._entries: dict[str, Entry[T]] = {}
        self._loaded = False
        self._loading = False
        self._source = "builtin"

    # -- registration -------------------------------------------------------------------
    def register(
        self,
        name: str,
        *,
        params: type[BaseModel] = NoParams,
        description: str,
        reference: str = "",
        version: str = "1",
        **meta: Any,
    ) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator: bind ``name`` to the decorated factory (checked against the contract)."""

        def deco(factory: Callable[..., T]) -> Callable[..., T]:
            self.add(
                Entry(
                    name=name,
                    factory=factory,
                    params=params,
                    description=description,
                    kind=self.kind,
                    reference=reference,
                    version=str(version),
                    source=self._source,
                    module=getattr(factory, "__module__", ""),
                    meta=dict(meta),
                )
            )
            return factory

        return deco

    def add(self, entry: Entry[T]) -> None:
        if not isinstance(entry.name, str) or not entry.name.strip():
            raise RegistryError(f"{self.kind} registration: the name must be a non-empty string, got {entry.name!r}")
        if not (isinstance(entry.params, type) and issubclass(entry.params, BaseModel)):
            raise RegistryError(f"{entry.label}: params must be a pydantic BaseModel class, got {entry.params!r}")
        if entry.name in self._entries:
            old = self._entries[entry.name]
            raise RegistryError(f"{self.kind} {entry.name!r} is already registered (by {old.source}); pick another name")
        contract = self.contract()
        if contract is not None:
            contract.check(entry)
        self._entries[entry.name] = entry

    def contract(self) -> Any:
        if self._contract is None and self.contract_path:
            self._contract = _resolve(self.contract_path)
        return self._contract

    # -- discovery ----------------------------------------------------------------------
    def _ensure_loaded(self) -> None:
        if self._loaded or self._loading:
            return
        self._loading = True
        try:
            if self.builtin_package:
                pkg = importlib.import_module(self.builtin_package)
                modules = getattr(pkg, "PLUGINS", None)
                if modules is None:
                    raise RegistryError(f"{self.builtin_package}: declares no PLUGINS (the modules that register {self.kind}s)")
                for mod in modules:
                    importlib.import_module(f"{self.builtin_package}.{mod}")
            for ep in importlib.metadata.entry_points(group=self.group):
                dist = ep.dist.name if ep.dist is not None else "?"
                ver = ep.dist.version if ep.dist is not None else "?"
                self._source = f"{dist}=={ver}"
                try:
                    ep.load()
                except RegistryError as exc:
                    raise RegistryError(f"plugin {self._source} ({ep.value}): {exc}") from None
                finally:
                    self._source = "builtin"
            self._loaded = True
        finally:
            self._loading = False

    # -- lookup -------------------------------------------------------------------------
    def list(self, pattern: str | list[str] = "*") -> list[str]:
        """Sorted names matching an fnmatch pattern (or any of several)."""
        self._ensure_loaded()
        pats = [pattern] if isinstance(pattern, str) else list(pattern)
        return sorted(n for n in self._entries if any(fnmatch.fnmatchcase(n, p) for p in pats))

    def __contains__(self, name: object) -> bool:
        self._ensure_loaded()
        return name in self._entries

    def __iter__(self) -> Iterator[Entry[T]]:
        self._ensure_loaded()
        return iter([self._entries[n] for n in sorted(self._entries)])

    def get(self, name: str) -> Entry[T]:
        self._ensure_loaded()
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise RegistryError(self.unknown_message(name)) from None

    def unknown_message(self, name: object) -> str:
        close = difflib.get_close_matches(str(name), list(self._entries), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        return f"unknown {self.kind} {name!r}{hint} (see `uebench list {self.kind}s`)"

    def validate(self, name: str, params: dict[str, Any] | None = None) -> BaseModel:
        """Validated params for ``name`` without building anything."""
        return self.get(name).validate(params)

    def create(self, name: str, **params: Any) -> T:
        """Validate ``params`` against the plugin's model, then build it."""
        entry = self.get(name)
        return entry.factory(entry.validate(params))
