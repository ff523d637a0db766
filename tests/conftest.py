"""Shared fixtures: the real CIFAR-10 copy beside the repository and small slices of it."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
CIFAR10 = SHARED_DATA / "cifar10"



def _need_cifar10() -> None:
    if not (CIFAR10 / "train.npz").exists():
        pytest.skip(f"the shared CIFAR-10 copy is not at {CIFAR10}")


@pytest.fixture(scope="session")
def cifar10():
    """The full real CIFAR-10 (Splits), loaded once per test session."""
    _need_cifar10()
    from registry import DATASETS

    return DATASETS.create("cifar10").load(SHARED_DATA)


@pytest.fixture(scope="session")
def cifar10_2k(cifar10):
    """A stratified 2,000-image train slice and 1,000-image test slice of the real data."""
    from bench.data import Splits, stratified_indices

    tr = cifar10.train.subset(stratified_indices(cifar10.train.y, 2000, 0))
    te = cifar10.test.subset(stratified_indices(cifar10.test.y, 1000, 0))
    return Splits("cifar10", tr, te)


@pytest.fixture(scope="session")
def mini():
    """The built-in cifar10-mini (ships in the package)."""
    from registry import DATASETS

    return DATASETS.create("cifar10-mini").load(SHARED_DATA)


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
    """A finished 2 attacks × 2 seeds run through the CLI: (config path, results dir, process)."""
    import os

    root = tmp_path_factory.mktemp("tiny")
    cfg = root / "tiny.yaml"
    cfg.write_text(TINY_CONFIG)
    env = {**os.environ, "UEBENCH_CACHE": str(root / "cache")}
    proc = run_cli("run", str(cfg), "--results-dir", str(root / "results"), cwd=root, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return cfg, root / "results", proc, env
