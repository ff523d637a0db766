"""A content-addressed artifact cache: each poison is computed once, on any machine, ever.

Key
    sha256 of the canonical JSON of ``{"kind", "schema", "spec"}``, where ``spec`` is
    everything that determines the artifact (for a perturbation: attack name, validated
    params, plugin version and source, dataset fingerprint, seed). The git commit is not in
    it: a commit that does not touch an attack must not invalidate its poisons; a plugin
    bumps its registered ``version`` when its output changes.

Layout
    ``<root>/<kind>/<key[:2]>/<key>.safetensors`` (the tensors) and ``<key>.json`` (the
    manifest: spec, versions, timings, the producer's metadata and the sha256 and size of
    the payload). Both are written to a temporary file in the same folder and renamed; the
    manifest goes last and marks the entry complete, so a reader never sees half an entry.

Integrity
    Every read hashes the payload and compares it with the manifest. A missing, truncated
    or corrupt entry is dropped and reported as a miss, so the caller regenerates it.

Locking
    ``get_or_create`` checks, takes a per-key lock, checks again, computes and publishes:
    concurrent runs (processes, or hosts sharing the folder) compute each key once. Only the
    check under the lock may remove a bad entry (the first check may race with a writer that
    is just republishing it). The
    default lock is ``flock`` (released by the OS if the holder dies); ``soft`` uses marker
    files for cluster filesystems where ``flock`` is a no-op (NFS mounted ``nolock``); a
    marker left by a dead process on the same host, or older than ``stale_after`` seconds,
    is broken.

No pickle anywhere: tensors are safetensors, everything else JSON.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from filelock import FileLock, SoftFileLock

from bench.atomic import atomic_write_bytes, is_stale_temp, sweep_temp
from bench.config import canonical_json
from registry.lazy import lazy_import

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_import("torch")

log = logging.getLogger("uebench.cache")

SCHEMA = 1
"""Bumped when the layout or the meaning of a key changes; part of every key."""

CACHE_ENV = "UEBENCH_CACHE"
DEFAULT_CACHE_DIR = "~/.cache/uebench/cache"
PAYLOAD, MANIFEST, LOCK = ".safetensors", ".json", ".lock"
REQUIRED: dict[str, tuple[frozenset, ...]] = {
    "perturbation": (frozenset({"delta", "meta.mode"}), frozenset({"kernels", "meta.mode", "meta.kind"})),
    "index": (frozenset({"index"}),),
}
"""For each kind the harness writes: alternatives of tensors (and ``meta.`` keys), one of which an entry must hold in full."""
LockMode = Literal["file", "soft"]


def resolve_cache_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """``explicit`` if given, else ``$UEBENCH_CACHE``, else ``~/.cache/uebench/cache``."""
    if explicit is not None and str(explicit) != "":
        return Path(explicit).expanduser()
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE_DIR).expanduser()


def cache_key(kind: str, spec: dict[str, Any]) -> str:
    """The full sha256 hex key of an artifact of ``kind`` determined by ``spec``."""
    return hashlib.sha256(canonical_json({"kind": kind, "schema": SCHEMA, "spec": spec}).encode()).hexdigest()


@dataclass
class CacheEntry:
    """A verified entry: its manifest and its tensors (decoded from the hashed bytes)."""

    kind: str
    key: str
    manifest: dict[str, Any]
    tensors: dict[str, "torch.Tensor"]

    @property
    def meta(self) -> dict[str, Any]:
        return self.manifest.get("meta", {})


class Cache:
    """The cache folder ``root`` (created on first write)."""

    def __init__(self, root: str | os.PathLike[str], lock: LockMode = "file", stale_after: float | None = None):
        if lock not in ("file", "soft"):
            raise ValueError(f"lock: must be 'file' or 'soft', got {lock!r}")
        self.root = Path(root).expanduser()
        self.lock_mode = lock
        self.stale_after = stale_after

    # -- paths ----------------------------------------------------------------------------
    def _stem(self, kind: str, key: str) -> Path:
        return self.root / kind / key[:2] / key

    def paths(self, kind: str, key: str) -> tuple[Path, Path]:
        """(payload, manifest) of an entry."""
        stem = self._stem(kind, key)
        return stem.with_suffix(PAYLOAD), stem.with_suffix(MANIFEST)

    def lock(self, kind: str, key: str, timeout: float = -1):
        """The per-key lock (blocking by default; ``timeout=0`` tries once)."""
        path = self._stem(kind, key).with_suffix(LOCK)
        path.parent.mkdir(parents=True, exist_ok=True)
        if self.lock_mode == "soft":
            extra = {} if self.stale_after is None else {"lifetime": self.stale_after}
            return SoftFileLock(str(path), timeout=timeout, **extra)
        return FileLock(str(path), timeout=timeout)

    # -- reading --------------------------------------------------------------------------
    def manifest(self, kind: str, key: str) -> dict[str, Any] | None:
        """The manifest if the entry looks complete (no hashing: cheap, for plans and listings)."""
        payload, manifest = self.paths(kind, key)
        if not manifest.is_file() or not payload.is_file():
            return None
        try:
            return json.loads(manifest.read_text())
        except (OSError, ValueError):
            return None

    def contains(self, kind: str, key: str) -> bool:
        return self.manifest(kind, key) is not None

    def get(self, kind: str, key: str, repair: bool = True) -> CacheEntry | None:
        """The verified entry, or None. A corrupt or malformed entry is removed when
        ``repair`` (the caller then regenerates it), else only reported as a miss."""
        payload, manifest_path = self.paths(kind, key)
        if not manifest_path.is_file():
            return None
        problem, manifest, data = None, None, b""
        try:
            manifest = json.loads(manifest_path.read_text())
            problem = _manifest_problem(manifest)
            if problem is None:
                data = payload.read_bytes()
                want = manifest["payload"]
                if len(data) != want["bytes"]:
                    problem = f"payload has {len(data)} bytes, manifest says {want['bytes']} (truncated?)"
                elif hashlib.sha256(data).hexdigest() != want["sha256"]:
                    problem = "payload sha256 differs from the manifest (corrupt)"
        except FileNotFoundError:
            problem = "payload file is missing"
        except (OSError, ValueError) as exc:
            problem = f"unreadable manifest ({type(exc).__name__}: {exc})"
        tensors: dict = {}
        if problem is None:
            try:
                from safetensors.torch import load

                tensors = load(data)
            except Exception as exc:
                problem = f"payload does not decode as safetensors ({type(exc).__name__})"
            else:
                problem = _content_problem(kind, tensors, manifest)
        if problem is not None:
            if repair:
                log.warning("cache: dropping %s/%s: %s", kind, key[:16], problem)
                self.remove(kind, key)
            return None
        _touch(manifest_path)
        return CacheEntry(kind, key, manifest, tensors)

    # -- writing --------------------------------------------------------------------------
    def put(
        self,
        kind: str,
        key: str,
        spec: dict[str, Any],
        tensors: dict[str, "torch.Tensor"],
        meta: dict[str, Any] | None = None,
        seconds: float | None = None,
    ) -> CacheEntry:
        """Publish an entry atomically: payload first, then the manifest that completes it."""
        from safetensors.torch import save

        from bench.provenance import versions

        tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        data = save(tensors, metadata={"kind": kind, "key": key})
        payload, manifest_path = self.paths(kind, key)
        if payload.parent.is_dir():  # what earlier, killed writers of this entry left behind
            sweep_temp(payload.parent, f".{key}.*.tmp")
        atomic_write_bytes(payload, data)
        manifest = {
            "kind": kind,
            "key": key,
            "schema": SCHEMA,
            "spec": spec,
            "payload": {"file": payload.name, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)},
            "tensors": {k: {"dtype": str(v.dtype).removeprefix("torch."), "shape": list(v.shape)} for k, v in tensors.items()},
            "meta": meta or {},
            "seconds": None if seconds is None else round(seconds, 3),
            "created": datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "versions": versions(),
        }
        atomic_write_bytes(manifest_path, (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode())
        log.info("cache: generated %s/%s in %.2fs", kind, key[:16], seconds or 0.0)
        return CacheEntry(kind, key, manifest, tensors)

    def get_or_create(
        self,
        kind: str,
        spec: dict[str, Any],
        make: Callable[[], tuple[dict[str, "torch.Tensor"], dict[str, Any]]],
        force: bool = False,
    ) -> tuple[CacheEntry, bool]:
        """The entry for ``spec``, computing it with ``make()`` if no one has; (entry, created).

        ``make`` returns (tensors, meta). Concurrent callers with the same spec wait on the
        key's lock and then read the one published entry. ``force`` computes and republishes
        it even if it exists (``uebench run --regenerate``).
        """
        key = cache_key(kind, spec)
        if not force:
            entry = self.get(kind, key, repair=False)
            if entry is not None:
                return entry, False
        with self.lock(kind, key):
            entry = None if force else self.get(kind, key)
            if entry is not None:
                log.info("cache: %s/%s made by another process while we waited", kind, key[:16])
                return entry, False
            t0 = time.perf_counter()
            tensors, meta = make()
            return self.put(kind, key, spec, tensors, meta, time.perf_counter() - t0), True

    def remove(self, kind: str, key: str) -> None:
        for p in self.paths(kind, key):
            try:
                p.unlink()
            except FileNotFoundError:
                pass

    # -- listing and housekeeping ---------------------------------------------------------
    def entries(self, kind: str | None = None) -> Iterator[dict[str, Any]]:
        """Manifests of the complete-looking entries (plus ``size`` and ``last_used``), sorted by kind and creation."""
        found = []
        if not self.root.is_dir():
            return iter(())
        for manifest_path in self.root.glob(f"{kind or '*'}/??/*{MANIFEST}"):
            try:
                m = json.loads(manifest_path.read_text())
                if _manifest_problem(m) is not None:
                    continue  # malformed: `gc` removes it as corrupt
                payload = manifest_path.with_suffix(PAYLOAD)
                m["size"] = payload.stat().st_size
                m["last_used"] = manifest_path.stat().st_mtime
            except (OSError, ValueError):
                continue
            found.append(m)
        return iter(sorted(found, key=lambda m: (m.get("kind", ""), m.get("created", ""), m.get("key", ""))))

    def verify(self) -> list[str]:
        """``kind/key`` of every entry whose payload does not match its manifest (removed)."""
        bad = []
        for m in list(self.entries()):
            if self.get(m["kind"], m["key"]) is None:
                bad.append(f"{m['kind']}/{m['key']}")
        return bad

    def gc(self, older_than_days: float | None = None, dry_run: bool = False) -> dict[str, list[str]]:
        """Remove what no reader can use: temp files of dead writers, half entries left by
        killed writers, corrupt or malformed entries, and (with ``older_than_days``) entries
        unused for that long."""
        report: dict[str, list[str]] = {"temp": [], "incomplete": [], "corrupt": [], "unused": []}
        if not self.root.is_dir():
            return report
        now = time.time()
        for path in sorted(self.root.glob("*/??/*")):
            name = path.name
            if name.startswith(".") and name.endswith(".tmp"):
                if is_stale_temp(path, now):
                    report["temp"].append(str(path))
            elif name.endswith(PAYLOAD) and not path.with_suffix(MANIFEST).exists():
                if now - path.stat().st_mtime > 3600:  # a live writer publishes its manifest right after
                    report["incomplete"].append(str(path))
            elif name.endswith(MANIFEST):
                if not path.with_suffix(PAYLOAD).exists():
                    report["incomplete"].append(str(path))
                    continue
                try:
                    m = json.loads(path.read_text())
                    bad = _manifest_problem(m) is not None or not _payload_ok(path.with_suffix(PAYLOAD), m)
                except (OSError, ValueError):
                    m, bad = None, True
                if bad:
                    report["corrupt"] += [str(path.with_suffix(PAYLOAD)), str(path)]
                elif older_than_days is not None and now - path.stat().st_mtime > older_than_days * 86400:
                    report["unused"] += [str(path.with_suffix(PAYLOAD)), str(path)]
        if not dry_run:
            for paths in report.values():
                for p in paths:
                    Path(p).unlink(missing_ok=True)
        return report


def _manifest_problem(m: Any) -> str | None:
    """Why a parsed manifest cannot describe an entry (None if it can)."""
    if not isinstance(m, dict):
        return f"manifest is a JSON {type(m).__name__}, not an object"
    pay = m.get("payload")
    if not isinstance(pay, dict) or not isinstance(pay.get("bytes"), int) or not isinstance(pay.get("sha256"), str):
        return "manifest has no valid payload record (bytes, sha256)"
    for k in ("kind", "key"):
        if not isinstance(m.get(k), str):
            return f"manifest has no {k}"
    if not isinstance(m.get("meta", {}), dict) or not isinstance(m.get("spec", {}), dict):
        return "manifest meta/spec are not objects"
    return None


def _payload_ok(payload: Path, manifest: dict) -> bool:
    try:
        data = payload.read_bytes()
    except OSError:
        return False
    want = manifest["payload"]
    if len(data) != want["bytes"] or hashlib.sha256(data).hexdigest() != want["sha256"]:
        return False
    try:
        from safetensors.torch import load

        tensors = load(data)
    except Exception:
        return False
    return _content_problem(manifest["kind"], tensors, manifest) is None


def _content_problem(kind: str, tensors: dict, manifest: dict) -> str | None:
    """What a decoded entry of ``kind`` lacks to be usable (None if it holds one alternative in full)."""
    have = set(tensors) | {f"meta.{k}" for k in manifest.get("meta", {})}
    lacks = [sorted(need - have) for need in REQUIRED.get(kind, (frozenset(),))]
    return None if not all(lacks) else "entry lacks " + " or ".join(", ".join(m) for m in lacks)


def _touch(path: Path) -> None:
    """Mark an entry used now (``gc --older-than`` removes entries nobody used for long)."""
    try:
        os.utime(path)
    except OSError:
        pass
