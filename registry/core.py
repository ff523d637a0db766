"""One generic plugin registry, in the style of timm's and torchvision's model registries.

A plugin is a name bound to a factory (usually a class) plus a pydantic params model and
metadata. `register` is a decorator; `list` takes fnmatch wildcards; `create` validates the
params *before* any work starts and then builds the plugin. Duplicate names raise (a silent
overwrite would make a leaderboard lie). An unknown name raises with the closest names.

Discovery is lazy: on first use a registry imports its built-in package (every public module
in it) and the modules named by its entry-point group (``uebench.attacks`` …), so third-party
plugins appear once their distribution is installed.
"""
from __future__ import annotations

import difflib
import fnmatch
import importlib
import importlib.metadata
import pkgutil
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Iterator, TypeVar

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
    reference: str = ""
    version: str = "1"
    source: str = "builtin"
    meta: dict[str, Any] = field(default_factory=dict)

    def validate(self, params: dict[str, Any] | BaseModel | None = None) -> BaseModel:
        """Params as the plugin's pydantic model; raises RegistryError with a one-line message."""
        if isinstance(params, self.params):
            return params
        try:
            return self.params.model_validate(dict(params or {}))
        except ValidationError as exc:
            raise RegistryError(f"{self.kind_label()}: {one_line(exc)}") from None

    def kind_label(self) -> str:
        return f"{self.meta.get('kind', 'plugin')} {self.name!r}"


def one_line(exc: ValidationError) -> str:
    """Condense a pydantic error into one line naming each field and what is allowed."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        elif err["type"] != "missing" and not isinstance(err.get("input"), (dict, list)):
            msg = f"{msg} (got {err['input']!r})"
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


class Registry(Generic[T]):
    """Named plugins of one kind (attack, defense, dataset)."""

    def __init__(self, kind: str, builtin_package: str | None = None, group: str | None = None):
        self.kind = kind
        self.builtin_package = builtin_package
        self.group = group or f"uebench.{kind}s"
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
        """Decorator: bind ``name`` to the decorated factory."""

        def deco(factory: Callable[..., T]) -> Callable[..., T]:
            self.add(
                Entry(
                    name=name,
                    factory=factory,
                    params=params,
                    description=description,
                    reference=reference,
                    version=version,
                    source=self._source,
                    meta={"kind": self.kind, **meta},
                )
            )
            return factory

        return deco

    def add(self, entry: Entry[T]) -> None:
        if entry.name in self._entries:
            old = self._entries[entry.name]
            raise RegistryError(
                f"{self.kind} {entry.name!r} is already registered (by {old.source}); pick another name"
            )
        self._entries[entry.name] = entry

    # -- discovery ----------------------------------------------------------------------
    def _ensure_loaded(self) -> None:
        if self._loaded or self._loading:
            return
        self._loading = True
        try:
            if self.builtin_package:
                pkg = importlib.import_module(self.builtin_package)
                for mod in pkgutil.iter_modules(pkg.__path__):
                    if not mod.name.startswith("_"):
                        importlib.import_module(f"{self.builtin_package}.{mod.name}")
            for ep in importlib.metadata.entry_points(group=self.group):
                dist = ep.dist.name if ep.dist is not None else "?"
                ver = ep.dist.version if ep.dist is not None else "?"
                self._source = f"{dist}=={ver}"
                try:
                    ep.load()
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

    def __contains__(self, name: str) -> bool:
        self._ensure_loaded()
        return name in self._entries

    def __iter__(self) -> Iterator[Entry[T]]:
        self._ensure_loaded()
        return iter([self._entries[n] for n in sorted(self._entries)])

    def get(self, name: str) -> Entry[T]:
        self._ensure_loaded()
        try:
            return self._entries[name]
        except KeyError:
            raise RegistryError(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(name, list(self._entries), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        return f"unknown {self.kind} {name!r}{hint} (see `uebench list {self.kind}s`)"

    def validate(self, name: str, params: dict[str, Any] | None = None) -> BaseModel:
        """Validated params for ``name`` without building anything."""
        return self.get(name).validate(params)

    def create(self, name: str, **params: Any) -> T:
        """Validate ``params`` against the plugin's model, then build it."""
        entry = self.get(name)
        return entry.factory(entry.validate(params))
