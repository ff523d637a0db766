"""Reading a matrix config file: YAML that cannot surprise, and ``--set`` overrides.

The loader refuses what would silently mean something else: a file that is not UTF-8 text,
a key given twice in one mapping (the second would win), and aliases that expand to more
than `MAX_NODES` nodes (a few hundred bytes of ``&a [*b, *b, …]`` can otherwise expand to
gigabytes). ``--set train.epochs=2`` overrides one field by its dotted path, the value read
as YAML. A config may derive from another (``base: other.yaml`` plus ``set:``, a list of the
same FIELD=VALUE assignments): the same experiment on another data subset or seed is then one
line of difference, not a copy that drifts. Every problem is a `ConfigError` with one line
naming the file, line and field.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from bench.config import ConfigError, Matrix, parse_matrix

MAX_NODES = 200_000
"""Most nodes a config may expand to, aliases included (the largest shipped config has ~2,000)."""


class OverrideError(ConfigError):
    """A ``--set`` override is malformed or names no field; one line."""


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing duplicate keys in a mapping. Merge keys (``<<: *base``)
    work as in YAML 1.1: a key written out overrides the merged one, which is not a duplicate."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first at line {seen[key] + 1})", key_node.start_mark
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def _expanded_size(obj: Any, memo: dict[int, int]) -> int:
    """Nodes of ``obj`` with every shared (aliased) subtree counted each time it is used."""
    if not isinstance(obj, (dict, list)):
        return 1
    key = id(obj)
    if key not in memo:
        memo[key] = 0  # a cycle (a recursive alias) counts once
        children = list(obj.keys()) + list(obj.values()) if isinstance(obj, dict) else obj
        memo[key] = 1 + sum(_expanded_size(c, memo) for c in children)
    return memo[key]


def read_yaml(path: Path) -> Any:
    """The parsed YAML document at ``path`` (see the module docstring for what is refused)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a config file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: unreadable ({exc.strerror or exc})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); a config is a YAML text file") from None
    if "\x00" in text:
        raise ConfigError(f"{path}: binary data, not a YAML config")
    try:
        raw = yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}:{where} not valid YAML ({getattr(exc, 'problem', exc)})") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply") from None
    if _expanded_size(raw, {}) > MAX_NODES:
        raise ConfigError(f"{path}: expands to more than {MAX_NODES:,} nodes (aliases used too often); write it out")
    return raw


def parse_assignment(text: str, flag: str = "--set") -> tuple[list[str], Any]:
    """``a.b=value`` → (["a", "b"], value read as YAML)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip() or any(not part for part in key.strip().split(".")):
        raise OverrideError(f"{flag}: expected FIELD=VALUE with a dotted field, e.g. train.epochs=2; got {text!r}")
    try:
        parsed = yaml.load(value, Loader=_StrictLoader) if value.strip() else ""
    except yaml.YAMLError:
        raise OverrideError(f"{flag} {key}: the value {value!r} is not valid YAML") from None
    return key.strip().split("."), parsed


def apply_overrides(raw: dict, assignments: list[str] | tuple[str, ...]) -> dict:
    """``raw`` with each ``--set FIELD=VALUE`` applied (nested mappings are created as needed;
    an index into a list is a number: ``attacks.1.params.epsilon=4``)."""
    raw = _copy(raw)
    for text in assignments:
        path, value = parse_assignment(text)
        node: Any = raw
        for i, part in enumerate(path[:-1]):
            node = _child(node, part, path[: i + 1], text)
        last = path[-1]
        if isinstance(node, list):
            node[_index(node, last, path, text)] = value
        elif isinstance(node, dict):
            node[last] = value
        else:
            raise OverrideError(f"--set {text}: {'.'.join(path[:-1])} is not a mapping")
    return raw


def _child(node: Any, part: str, where: list[str], text: str) -> Any:
    if isinstance(node, list):
        return node[_index(node, part, where, text)]
    if not isinstance(node, dict):
        raise OverrideError(f"--set {text}: {'.'.join(where[:-1])} is not a mapping")
    if not isinstance(node.get(part), (dict, list)):
        node[part] = {} if part not in node else node[part]
        if not isinstance(node[part], (dict, list)):
            raise OverrideError(f"--set {text}: {'.'.join(where)} is a value, not a mapping")
    return node[part]


def _index(node: list, part: str, where: list[str], text: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise OverrideError(f"--set {text}: {'.'.join(where)}: expected a list index 0..{len(node) - 1}")
    return int(part)


def _copy(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _copy(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_copy(v) for v in obj]
    return obj


MAX_BASE_DEPTH = 8
"""Most ``base:`` links one config may follow."""


def read_config(path: Path, _chain: tuple[Path, ...] = ()) -> dict:
    """The raw mapping of the config at ``path``, its ``base:`` chain resolved.

    ``base: FILE`` (relative to this file) starts from FILE's raw mapping (itself resolved
    the same way); this file's other top-level fields then replace FILE's, and its ``set:``
    list of FIELD=VALUE strings is applied last, as ``--set`` would be. ``name`` is never
    inherited: a derived config is its own matrix (its rows go to their own file)."""
    path = Path(path)
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of fields (datasets, attacks, archs, …)")
    raw.setdefault("name", path.stem)
    base, sets = raw.pop("base", None), raw.pop("set", None)
    if sets is not None and base is None:
        raise ConfigError(f"{path}: set: only a config with a base: has set:; write the fields out, or add base: FILE")
    if base is None:
        return raw
    if not isinstance(base, str) or not base.strip():
        raise ConfigError(f"{path}: base: expected the path of another config file (relative to this one); got {base!r}")
    if sets is not None and (not isinstance(sets, list) or not all(isinstance(t, str) for t in sets)):
        raise ConfigError(f"{path}: set: expected a list of FIELD=VALUE strings, e.g. [\"datasets.0.subset_seed=1\"]")
    target = (path.parent / base).resolve()
    chain = (*_chain, path.resolve())
    if target in chain:
        raise ConfigError(f"{path}: base: {base} leads back to {target.name} (a cycle); a base must not derive from its child")
    if len(chain) > MAX_BASE_DEPTH:
        raise ConfigError(f"{path}: base: more than {MAX_BASE_DEPTH} configs deep; derive from the config itself")
    if not target.is_file():
        raise ConfigError(f"{path}: base: no config file {target}; give a path relative to {path.parent}/")
    merged = read_config(target, chain)
    merged.update(raw)
    try:
        return apply_overrides(merged, sets or [])
    except OverrideError as exc:
        raise ConfigError(f"{path}: set: {exc}".replace("--set ", "")) from None


def load_matrix(path: str | Path, overrides: dict[str, Any] | None = None, assignments: tuple[str, ...] = ()) -> Matrix:
    """Read and validate a matrix YAML; raise ConfigError with one line on any problem.

    ``overrides`` replaces top-level fields (None values are ignored: the CLI's unset
    flags); ``assignments`` are ``--set FIELD=VALUE`` strings."""
    path = Path(path)
    raw = read_config(path)
    raw.update({k: v for k, v in (overrides or {}).items() if v is not None})
    if assignments:
        raw = apply_overrides(raw, assignments)
    return parse_matrix(raw, str(path))
