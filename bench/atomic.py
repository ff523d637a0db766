"""Atomic file writes, and the sweep of what killed writers leave behind.

Every file uebench publishes (result rows rewritten by a prune, curves, the leaderboard,
cache entries) is written to a temporary file in the same folder, fsynced and renamed over
the target, so a reader never sees half a file and a crash leaves the old one intact. A
writer killed between the two leaves its temporary file; the name says who wrote it
(``.<name>.<host>.<pid>.<random>.tmp``), so `sweep_temp` can remove the ones whose writer
is dead (same host) or that are older than a day (any host) without touching a live writer's.
"""
from __future__ import annotations

import os
import re
import socket
import tempfile
import time
from pathlib import Path


def _read_umask() -> int:
    """The process umask. Reading it means setting it, so this runs once, at import (before
    any worker thread could create a file in the moment it is 0)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()
_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40] or "host"
_TEMP = re.compile(r"^\..+\.(?P<host>[A-Za-z0-9-]+)\.(?P<pid>\d+)\.[^.]+\.tmp$")
STALE_SECONDS = 86400.0
"""A temporary file of another host older than this is a killed writer's."""
UNNAMED_STALE_SECONDS = 3600.0
"""A temporary file without a writer in its name (an older uebench's) older than this is stale."""


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically; see `atomic_write_bytes`."""
    atomic_write_bytes(path, text.encode())


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder, fsync and rename."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"atomic_write_bytes: data must be bytes, got {type(data).__name__}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{_HOST}.{os.getpid()}.", suffix=".tmp")
    try:
        # mkstemp makes the file private (0600); a result is as readable as any file written here
        os.fchmod(fd, path.stat().st_mode & 0o7777 if path.exists() else 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_stale_temp(path: Path, now: float | None = None) -> bool:
    """Whether ``path`` is a temporary file of a writer that can no longer finish it."""
    m = _TEMP.match(path.name)
    if m is None:
        if not (path.name.startswith(".") and path.name.endswith(".tmp")):
            return False
        try:
            return (now or time.time()) - path.stat().st_mtime > UNNAMED_STALE_SECONDS
        except OSError:
            return False
    if m["host"] == _HOST and int(m["pid"]) != os.getpid() and not _alive(int(m["pid"])):
        return True
    try:
        age = (now or time.time()) - path.stat().st_mtime
    except OSError:
        return False
    return age > STALE_SECONDS  # a live (or reused) pid, or another host's writer: only by age


def sweep_temp(folder: Path, pattern: str = "*.tmp", dry_run: bool = False) -> list[Path]:
    """Remove (or list) the stale temporary files matching ``pattern`` under ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    now = time.time()
    stale = [p for p in sorted(folder.glob(pattern)) if p.is_file() and is_stale_temp(p, now)]
    if not dry_run:
        for p in stale:
            p.unlink(missing_ok=True)
    return stale
