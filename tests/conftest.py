"""Shared fixtures: the built-in real data (cifar10-mini), the full CIFAR-10 copy beside the
repository where a test truly needs it, one-thread torch, and the real `uebench` CLI.

Skips are watched: a test may skip, or be an expected failure, only for a reason listed in
``tests/allowed_skips.txt``; with ``UEBENCH_STRICT_SKIPS=1`` (as ``.ci/run`` sets it) any other
skip or xfail fails the session, so the suite cannot go quietly green on a machine where it
tests less. Expected failures are strict (pyproject: ``xfail_strict``): one that starts to pass
fails too, so a measured "does not hold" is re-measured on every run.
"""
from __future__ import annotations

import fnmatch
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
CIFAR10 = SHARED_DATA / "cifar10"
DATA = SHARED_DATA  # the data root tests pass (only the full-copy tests read from it)
FULL_COPY_REASON = f"needs the full CIFAR-10 copy at {CIFAR10}"


def have_full_copy() -> bool:
    return (CIFAR10 / "train.npz").is_file() and (CIFAR10 / "test.npz").is_file()


needs_full_copy = pytest.mark.skipif(not have_full_copy(), reason=FULL_COPY_REASON)


@pytest.fixture(scope="session")
def cifar10():
    """The full real CIFAR-10 (Splits), loaded once per test session."""
    if not have_full_copy():
        pytest.skip(FULL_COPY_REASON)
    from registry import DATASETS

    return DATASETS.create("cifar10").load(SHARED_DATA)


@pytest.fixture(scope="session")
def mini():
    """The built-in cifar10-mini: 2,000 train / 500 test real CIFAR-10 images, sorted by class."""
    from registry import DATASETS

    return DATASETS.create("cifar10-mini").load(None)


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread: small models and batches gain nothing from a shared second core,
    and lose several-fold when another process holds it."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


TINY_CONFIG = """\
name: tiny
datasets:
  - {name: cifar10-mini, n_train: 300, n_test: 200}
attacks:
  - none
  - {name: random, params: {mode: class, epsilon: 8}}
defenses: [standard]
archs: [mlp]
seeds: [0, 1]
train: {epochs: 2, batch_size: 64, lr: 0.05}
"""


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: int = 300):
    """Run the real `uebench` CLI in a subprocess (as a user would)."""
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "bench.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=timeout,
    )


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A finished 2 attacks × 2 seeds run through the CLI: (config path, results dir, process, env)."""
    root = tmp_path_factory.mktemp("tiny")
    cfg = root / "tiny.yaml"
    cfg.write_text(TINY_CONFIG)
    env = {**os.environ, "UEBENCH_CACHE": str(root / "cache")}
    proc = run_cli("run", str(cfg), "--results-dir", str(root / "results"), cwd=root, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return cfg, root / "results", proc, env


# -- watching skips ---------------------------------------------------------------------------
_SKIPPED: list[tuple[str, str]] = []


def _allowed() -> list[str]:
    lines = (REPO / "tests" / "allowed_skips.txt").read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]


def pytest_runtest_logreport(report):
    if not report.skipped:
        return
    if hasattr(report, "wasxfail"):  # an expected failure: pytest reports it as skipped
        _SKIPPED.append((report.nodeid, report.wasxfail.removeprefix("reason: ")))
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    _SKIPPED.append((report.nodeid, reason.removeprefix("Skipped: ")))


def pytest_sessionfinish(session, exitstatus):
    if os.environ.get("UEBENCH_STRICT_SKIPS") != "1":
        return
    allowed = _allowed()
    unexpected = [(n, r) for n, r in _SKIPPED if not any(fnmatch.fnmatch(r, pat) for pat in allowed)]
    if unexpected:
        tr = session.config.pluginmanager.get_plugin("terminalreporter")
        lines = ["unexpected skips or xfails (not in tests/allowed_skips.txt):"] + [f"  {n}: {r}" for n, r in unexpected]
        if tr is not None:
            tr.write_line("\n".join(lines), red=True)
        session.exitstatus = 1
