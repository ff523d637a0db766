"""Where a number came from: code version, package versions, git commit.

Computed once per process (the git call costs a subprocess) and stamped on every row.
"""
from __future__ import annotations

import functools
import platform
import subprocess
from importlib import metadata
from pathlib import Path

import bench

REPO = Path(__file__).resolve().parents[1]


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "absent"


@functools.cache
def versions() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "torch": _version("torch"),
        "torchvision": _version("torchvision"),
        "timm": _version("timm"),
        "uebench": bench.__version__,
    }


OUTPUTS = ("results", "leaderboard.md", "leaderboard.csv", "leaderboard")
"""What uebench itself writes into a checkout (published rows, the leaderboard and its
figures): changing them does not change the code, so they never make a checkout dirty (a
second publishing run from one clean clone records the same commit as the first)."""


def checkout_state(repo: Path) -> str:
    """HEAD of the git checkout at ``repo``, with ``-dirty`` if a tracked file other than
    OUTPUTS changed; "unknown" outside git."""
    try:
        sha = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, timeout=10).stdout.strip()
        if not sha:
            return "unknown"
        exclude = [f":(exclude){p}" for p in OUTPUTS]
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no", "--", ".", *exclude],
            capture_output=True, text=True, timeout=10,
        ).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@functools.cache
def git_commit() -> str:
    """The checkout uebench runs from (``checkout_state`` of this repository)."""
    return checkout_state(REPO)


@functools.cache
def _module_code_hash(module: str) -> str:
    import hashlib
    import importlib
    import sys

    try:
        mod = sys.modules.get(module) or importlib.import_module(module)
    except ImportError:
        return ""
    if hasattr(mod, "__path__"):
        base = Path(next(iter(mod.__path__)))
        files = sorted(base.rglob("*.py"))
    else:
        file = getattr(mod, "__file__", None)
        if not file:
            return ""
        base, files = Path(file).parent, [Path(file)]
    h = hashlib.sha256()
    for f in files:
        h.update(str(f.relative_to(base)).encode() + b"\0")
        try:
            h.update(f.read_bytes())
        except OSError:
            return ""
        h.update(b"\0")
    return h.hexdigest()[:16]


def plugin_code_hash(entry) -> str:
    """sha256[:16] of a plugin's source: its module's file, or every ``.py`` file of its package
    when the plugin lives in a package (EM's loop, params and presets are one family).

    Recorded in each cached poison's manifest: a cached poison made by other code than is
    installed now is reported (the cache key deliberately does not include it, so an edit
    that does not change the output does not invalidate every poison; the plugin's
    ``version`` is what does). Shared building blocks outside the plugin's own module or
    package are not part of it."""
    return _module_code_hash(entry.module) if entry.module else ""
