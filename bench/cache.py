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
    concurrent runs (processes, or hosts sharing the folder) compute each key once. The
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
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Literal

from filelock import FileLock, SoftFileLock

from bench.results import atomic_write_bytes
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

    def get(self, kind: str, key: str) -> CacheEntry | None:
        """The verified entry, or None; a corrupt entry is removed (the caller regenerates it)."""
        payload, manifest_path = self.paths(kind, key)
        if not manifest_path.is_file():
            return None
        problem = None
        try:
            manifest = json.loads(manifest_path.read_text())
            data = payload.read_bytes()
            want = manifest["payload"]
            if len(data) != want["bytes"]:
                problem = f"payload has {len(data)} bytes, manifest says {want['bytes']} (truncated?)"
            elif hashlib.sha256(data).hexdigest() != want["sha256"]:
                problem = "payload sha256 differs from the manifest (corrupt)"
        except FileNotFoundError:
            problem = "payload file is missing"
        except (OSError, ValueError, KeyError, TypeError) as exc:
            problem = f"unreadable manifest ({type(exc).__name__}: {exc})"
        if problem is None:
            try:
                from safetensors.torch import load

                tensors = load(data)
            except Exception as exc:  # noqa: BLE001 - any decoding error means a bad entry
                problem = f"payload does not decode as safetensors ({type(exc).__name__})"
        if problem is not None:
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
    ) -> tuple[CacheEntry, bool]:
        """The entry for ``spec``, computing it with ``make()`` if no one has; (entry, created).

        ``make`` returns (tensors, meta). Concurrent callers with the same spec wait on the
        key's lock and then read the one published entry.
        """
        key = cache_key(kind, spec)
        entry = self.get(kind, key)
        if entry is not None:
            return entry, False
        with self.lock(kind, key):
            entry = self.get(kind, key)
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
        """Remove what no reader can use: temp files and half entries left by killed writers,
        corrupt entries, and (with ``older_than_days``) entries unused for that long."""
        report: dict[str, list[str]] = {"temp": [], "incomplete": [], "corrupt": [], "unused": []}
        if not self.root.is_dir():
            return report
        now = time.time()
        for path in sorted(self.root.glob("*/??/*")):
            name = path.name
            if name.startswith(".") and name.endswith(".tmp"):
                if now - path.stat().st_mtime > 3600:  # a live writer's temp file is younger
                    report["temp"].append(str(path))
            elif name.endswith(PAYLOAD) and not path.with_suffix(MANIFEST).exists():
                if now - path.stat().st_mtime > 3600:
                    report["incomplete"].append(str(path))
            elif name.endswith(MANIFEST) and not path.with_suffix(PAYLOAD).exists():
                report["incomplete"].append(str(path))
        for m in list(self.entries()):
            payload, manifest = self.paths(m["kind"], m["key"])
            if older_than_days is not None and now - m["last_used"] > older_than_days * 86400:
                report["unused"] += [str(payload), str(manifest)]
            elif not _payload_ok(payload, m):
                report["corrupt"] += [str(payload), str(manifest)]
        if not dry_run:
            for paths in report.values():
                for p in paths:
                    Path(p).unlink(missing_ok=True)
        return report


def _payload_ok(payload: Path, manifest: dict) -> bool:
    try:
        data = payload.read_bytes()
    except OSError:
        return False
    want = manifest.get("payload", {})
    return len(data) == want.get("bytes") and hashlib.sha256(data).hexdigest() == want.get("sha256")


def _touch(path: Path) -> None:
    """Mark an entry used now (``gc --older-than`` removes entries nobody used for long)."""
    try:
        os.utime(path)
    except OSError:
        pass


def format_entries(entries: list[dict]) -> str:
    """``uebench cache ls``: one line per entry."""
    if not entries:
        return "(empty)"
    lines = [f"{'kind':<12}  {'key':<16}  {'size':>9}  {'seconds':>8}  {'created':<25}  what"]
    for m in entries:
        spec = m.get("spec", {})
        if m.get("kind") == "perturbation":
            what = f"{spec.get('attack')} {canonical_json(spec.get('params', {}))} seed {spec.get('seed')} data {str(spec.get('dataset'))[:12]}"
        else:
            what = f"ratio {spec.get('poison_ratio')} classes {spec.get('poison_classes') or 'all'} seed {spec.get('seed')} data {str(spec.get('dataset'))[:12]}"
        secs = m.get("seconds")
        lines.append(
            f"{m.get('kind', '?'):<12}  {m.get('key', '')[:16]:<16}  {_size(m.get('size', 0)):>9}  "
            f"{'' if secs is None else f'{secs:.1f}':>8}  {m.get('created', ''):<25}  {what}"
        )
    return "\n".join(lines)


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
