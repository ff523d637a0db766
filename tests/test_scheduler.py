"""The scheduler on real data: the cache makes every poison once, reruns skip, new defenses
add exactly their cells, damaged cache entries are regenerated, failures are recorded and
retried on request, partial / per-class poisoning publish what they claim; and, with real
`uebench run` subprocesses, a run killed with SIGKILL is finished by two concurrent reruns."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import DATA

from bench.cache import Cache
from bench.config import ConfigError, parse_matrix
from bench.device import cpu_type
from bench.plan import plan
from bench.poison import load_dataset, make_poison
from bench.preflight import PreflightError
from bench.records import PERTURBATION
from bench.results import read_rows
from bench.scheduler import env_for, plan_status, run_matrix
from registry import ATTACKS

BASE = {
    "name": "sched",
    "datasets": [{"name": "cifar10-mini", "n_train": 300, "n_test": 200}],
    "attacks": ["none", {"name": "random", "params": {"mode": "class", "epsilon": 8}}],
    "defenses": ["standard"],
    "archs": ["mlp"],
    "seeds": [0, 1],
    "train": {"epochs": 1, "batch_size": 64, "lr": 0.05},
    "device": "cpu",
}


def matrix(**changes):
    return parse_matrix({**BASE, **changes})


def status(m, results: Path, data: Path, cache: Path):
    return plan_status(m, results, env_for(data, cache))


def materialize(task, m, clean, cache, device):
    return make_poison(task, m.apply, clean, cache, device)


def run(m, results: Path, cache: Path, **kw):
    return run_matrix(m, results, DATA, cache_dir=cache, **kw)


def numbers(results: Path, name: str = "sched") -> dict:
    return {
        r.cell_hash: (r.clean_acc_final, r.clean_acc_peak, r.train_acc_final, r.peak_epoch)
        for r in read_rows(results / f"{name}.csv")
    }


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """The 2 attacks × 2 seeds matrix, run once: (root, summary)."""
    root = tmp_path_factory.mktemp("sched")
    summary = run(matrix(), root / "results", root / "cache")
    return root, summary


def test_first_run_makes_each_poison_once_and_writes_every_cell(finished):
    root, s = finished
    assert (s.total, s.ok, s.failed, s.skipped) == (4, 4, 0, 0)
    assert (s.poisons_needed, s.poisons_generated, s.poisons_cached) == (4, 4, 0)
    rows = read_rows(root / "results" / "sched.csv")
    assert len({r.cell_hash for r in rows}) == 4 and {r.status for r in rows} == {"ok"}
    cache = Cache(root / "cache")
    pert = [e for e in cache.entries(PERTURBATION)]
    assert len(pert) == 4 and cache.verify() == []
    for r in rows:  # each row names the cache entry its poison came from
        assert any(e["key"].startswith(json.loads(r.attack_stats)["poison"]["perturbation"]) for e in pert)


def test_second_run_of_a_finished_matrix_trains_and_generates_nothing(finished):
    root, _ = finished
    before = (root / "results" / "sched.csv").read_bytes()
    s = run(matrix(), root / "results", root / "cache")
    assert (s.skipped, s.trained, s.poisons_generated) == (4, 0, 0)
    assert (root / "results" / "sched.csv").read_bytes() == before
    st = status(matrix(), root / "results", DATA, root / "cache")
    assert (len(st.done), len(st.todo), len(st.to_generate)) == (4, 0, 0)


def test_adding_a_defense_trains_exactly_attacks_x_archs_x_seeds_new_cells(finished, tmp_path):
    """Also runs the new cells on two local worker processes: [standard, standard] is a no-op
    stack, so each of its numbers must equal the in-process `standard` number of its cell."""
    root, _ = finished
    shutil.copytree(root / "results", tmp_path / "results")
    m = matrix(defenses=["standard", ["standard", "standard"]])
    st = status(m, tmp_path / "results", DATA, root / "cache")
    assert (len(st.done), len(st.todo), len(st.poisons), len(st.to_generate)) == (4, 4, 4, 0)
    s = run(m, tmp_path / "results", root / "cache", executor_params={"workers": 2})
    assert (s.skipped, s.ok, s.failed) == (4, 2 * 1 * 2, 0)  # attacks × archs × seeds
    assert (s.poisons_generated, s.poisons_cached) == (0, 4)
    assert s.executor == "local (2 workers, 1 threads each)"
    rows = read_rows(tmp_path / "results" / "sched.csv")
    assert len(rows) == 8 and {r.defense for r in rows} == {"standard", "standard+standard"}
    by = {(r.attack, r.seed, r.defense): (r.clean_acc_final, r.train_acc_final, r.device) for r in rows}
    for (attack, seed, defense), (acc, train_acc, device) in by.items():
        if defense == "standard+standard":
            assert device == f"cpu:1t ({cpu_type()})" and (acc, train_acc) == by[attack, seed, "standard"][:2]


def test_corrupted_cache_entry_is_regenerated_and_gives_the_same_numbers(finished, tmp_path):
    root, _ = finished
    shutil.copytree(root / "cache", tmp_path / "cache")
    cache = Cache(tmp_path / "cache")
    victim = next(e for e in cache.entries(PERTURBATION) if e["spec"]["attack"] == "random" and e["spec"]["seed"] == 0)
    payload, _ = cache.paths(PERTURBATION, victim["key"])
    data = bytearray(payload.read_bytes())
    data[len(data) // 2] ^= 0x55
    payload.write_bytes(bytes(data))
    s = run(matrix(seeds=[0]), tmp_path / "results", tmp_path / "cache")  # the seed-0 half of the matrix
    assert (s.ok, s.poisons_generated, s.poisons_cached) == (2, 1, 1)
    assert cache.verify() == []
    reference = numbers(root / "results")
    assert numbers(tmp_path / "results") == {k: reference[k] for k in numbers(tmp_path / "results")}


def test_failed_cells_are_recorded_then_skipped_unless_retried(tmp_path):
    m = matrix(attacks=["none"], train={"epochs": 1, "batch_size": 64, "lr": 1e12})  # the loss diverges
    s = run(m, tmp_path / "r", tmp_path / "c")
    assert (s.ok, s.failed) == (0, 2)  # every cell ran and was recorded: the first failure did not stop the run
    rows = read_rows(tmp_path / "r" / "sched.csv")
    assert {r.status for r in rows} == {"failed"} and all("TrainingDiverged" in r.error for r in rows)
    s = run(m, tmp_path / "r", tmp_path / "c")
    assert (s.trained, len(s.skipped_failed)) == (0, 2)
    assert status(m, tmp_path / "r", DATA, tmp_path / "c").todo == []
    s = run(m.model_copy(update={"seeds": [0]}), tmp_path / "r", tmp_path / "c", retry_failed=True)
    assert (s.trained, s.failed, s.poisons_generated) == (1, 1, 0)
    assert len(read_rows(tmp_path / "r" / "sched.csv")) == 2  # replaced, not duplicated


def test_partial_poisoning_shares_one_perturbation_and_one_index_set(tmp_path):
    m = matrix(
        attacks=[{"name": "random", "params": {"mode": "sample", "epsilon": 8}}],
        seeds=[0],
        poison_ratios=[0.5, 1.0],
        clean_baseline=True,
    )
    s = run(m, tmp_path / "r", tmp_path / "c")
    assert (s.ok, s.poisons_needed, s.poisons_generated) == (3, 1, 1)  # δ does not depend on the ratio
    rows = {(r.attack, r.poison_ratio): r for r in read_rows(tmp_path / "r" / "sched.csv")}
    assert set(rows) == {("random", 0.5), ("random", 1.0), ("clean-only", 0.5)}
    half, base = json.loads(rows["random", 0.5].attack_stats), json.loads(rows["clean-only", 0.5].attack_stats)
    assert half["poison"]["index"] == base["poison"]["index"] and half["poison"]["n_poisoned"] == 150
    assert rows["clean-only", 0.5].n_train == 150 and rows["random", 0.5].n_train == 300
    # the baseline sits in the same leaderboard section as the attack it is the reference for,
    # in its partial-poisoning table
    from bench.leaderboard import build

    board = build(tmp_path / "r")
    (section,) = board.sections
    assert section.n_pool == 300 and set(section.partial) == {("random", 0.5), ("clean-only", 0.5)}
    partial = board.markdown.split("**Partial poisoning**")[1].split("**")[0]
    assert "| clean-only |" in partial and "| random |" in partial and "| 50% | 100% |" in partial

    # what was published: exactly the stored, stratified index set differs from the clean images
    cache = Cache(tmp_path / "c")
    clean = load_dataset(m.datasets[0], DATA)
    task = plan(m).cells[0].poison
    published = materialize(task, m, clean, cache, torch.device("cpu")).splits.train
    changed = torch.nonzero((published.x != clean.train.x).flatten(1).any(1)).flatten()
    index = next(e for e in cache.entries("index"))
    stored = Cache(tmp_path / "c").get("index", index["key"]).tensors["index"]
    assert torch.equal(changed, stored)
    assert torch.bincount(clean.train.y[stored], minlength=10).tolist() == [15] * 10
    assert (published.x.int() - clean.train.x.int()).abs().max() <= 8


def test_single_class_poisoning_touches_only_that_class_and_reports_its_accuracy(tmp_path):
    m = matrix(attacks=[{"name": "random", "params": {"mode": "class", "epsilon": 8}}], seeds=[0], poison_classes=["bird"])
    s = run(m, tmp_path / "r", tmp_path / "c")
    assert s.ok == 1
    (row,) = read_rows(tmp_path / "r" / "sched.csv")
    assert row.attack == "random[mode=class]@bird" and row.poison_ratio == 0.1
    report = json.loads(row.defense_report)
    assert 0 <= report["acc_poisoned_classes"] <= 100 and 0 <= report["acc_other_classes"] <= 100
    clean = load_dataset(m.datasets[0], DATA)
    published = materialize(plan(m).cells[0].poison, m, clean, Cache(tmp_path / "c"), torch.device("cpu")).splits.train
    changed = (published.x != clean.train.x).flatten(1).any(1)
    bird = clean.train.classes.index("bird")
    assert changed.sum() > 0 and torch.equal(changed & (clean.train.y != bird), torch.zeros_like(changed))


def test_poisoning_settings_are_validated_with_one_line(tmp_path):
    cases = [
        ({"poison_ratio": 0.5, "poison_ratios": [0.2]}, "poison_ratio and poison_ratios: give one"),
        ({"poison_ratios": [0.2, 1.5]}, "poison_ratios: every ratio must be in (0, 1]"),
        ({"clean_baseline": True}, "clean_baseline: needs a poison ratio < 1 or poison_classes"),
        ({"source_archs": ["mlp"]}, "source_archs: no attack in `attacks` has a source_arch param"),
    ]
    for changes, message in cases:
        with pytest.raises(ConfigError) as err:
            matrix(**changes)
        assert message in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(PreflightError, match="poison_classes: 'brid' is not a class of cifar10-mini; did you mean 'bird'"):
        run(matrix(poison_classes=["brid"]), tmp_path / "r", tmp_path / "c")
    assert not (tmp_path / "r").exists()


# -- real processes -------------------------------------------------------------------------
SUMMARY = re.compile(r"(\d+) cells: (\d+) run, (\d+) already done, (\d+) failed, (\d+) poisons generated")
GENERATED = re.compile(r"cache: generated perturbation/([0-9a-f]{16})")


def uebench(cfg: Path, results: Path, cache: Path, **popen) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "bench.cli", "-v", "run", str(cfg), "--results-dir", str(results)]
    cmd += ["--cache-dir", str(cache), "--no-leaderboard"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def test_killed_run_is_finished_by_two_concurrent_reruns_with_the_uninterrupted_numbers(finished, tmp_path):
    """kill -9 mid-run; then the same command twice at once. Together they finish the rest,
    every poison is generated once over all three processes, no cell is trained twice, no row
    is duplicated or torn, no cache entry is corrupt, and the numbers equal an uninterrupted run."""
    root, _ = finished
    cfg = tmp_path / "sched.yaml"
    cfg.write_text(yaml.safe_dump(BASE))
    results, cache, csv = tmp_path / "results", tmp_path / "cache", tmp_path / "results" / "sched.csv"
    first = uebench(cfg, results, cache, start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and first.poll() is None and not (csv.exists() and read_rows(csv)):
        time.sleep(0.01)
    assert first.poll() is None, "the run ended before it could be killed:\n" + first.communicate()[1][-2000:]
    os.killpg(first.pid, signal.SIGKILL)
    killed_err = first.communicate()[1]
    partial = numbers(tmp_path / "results")
    assert 1 <= len(partial) < 4 and len(read_rows(csv)) == len(partial)
    assert Cache(cache).verify() == []

    reruns = [uebench(cfg, results, cache) for _ in range(2)]
    errs = [p.communicate(timeout=300)[1] for p in reruns]
    for p, err in zip(reruns, errs):
        assert p.returncode == 0, err[-3000:]
    counts = [tuple(map(int, SUMMARY.search(err).groups())) for err in errs]
    assert sum(c[1] for c in counts) == 4 - len(partial)  # cells trained by the reruns: the rest, once each
    made = [k for err in [killed_err, *errs] for k in GENERATED.findall(err)]
    assert sorted(made) == sorted(set(made)) and len(made) == 4  # each poison generated exactly once
    rows = read_rows(csv)
    assert len(rows) == len({r.cell_hash for r in rows}) == 4
    assert numbers(results) == numbers(root / "results")
    assert Cache(cache).verify() == [] and len(list(Cache(cache).entries(PERTURBATION))) == 4


def _stat(pid: int) -> list[str] | None:
    """State and parent of a process from Linux /proc; None once it is gone or a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] in ("Z", "X") else fields


def _workers(pid: int) -> list[int]:
    """Live spawned worker processes whose parent is ``pid``."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        child = int(stat.parent.name)
        fields = _stat(child)
        try:
            spawned = b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if fields and int(fields[1]) == pid and spawned:
            out.append(child)
    return out


def test_workers_end_when_their_driver_is_killed(tmp_path):
    """SIGKILL (or SIGTERM) to the driver alone, not its process group: its worker processes
    must not go on training cells of a plan nobody reads; they exit within a few seconds."""
    cfg = tmp_path / "sched.yaml"
    cfg.write_text(yaml.safe_dump({**BASE, "seeds": [0, 1, 2, 3], "train": {"epochs": 30, "batch_size": 64, "lr": 0.05}}))
    cmd = [sys.executable, "-m", "bench.cli", "run", str(cfg), "--results-dir", str(tmp_path / "r"), "--cache-dir", str(tmp_path / "c"),
           "--workers", "2", "--no-leaderboard"]
    driver = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.time() + 120
        workers: list[int] = []
        while time.time() < deadline and driver.poll() is None and len(workers) < 2:
            time.sleep(0.2)
            workers = _workers(driver.pid)
        assert len(workers) == 2, "no worker processes appeared:\n" + (driver.stderr.read()[-2000:] if driver.poll() is not None else "")
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
        deadline = time.time() + 15
        while time.time() < deadline and any(_stat(w) for w in workers):
            time.sleep(0.2)
        assert [w for w in workers if _stat(w)] == [], "workers outlived their driver"
    finally:
        try:
            os.killpg(driver.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_ray_executor_on_a_local_cluster_gives_the_local_numbers(finished, tmp_path):
    """The 2 attacks × 2 seeds matrix as Ray tasks on a 2-CPU cluster this test starts."""
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'uebench[ray]')")
    root, _ = finished
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        s = run(matrix(), tmp_path / "results", tmp_path / "cache", executor="ray", executor_params={"num_cpus": 1})
    finally:
        ray.shutdown()
    assert s.executor.startswith("ray (2 CPUs, 0 GPUs")
    assert (s.ok, s.failed, s.poisons_generated) == (4, 0, 4)
    assert {r.device for r in read_rows(tmp_path / "results" / "sched.csv")} == {f"cpu:1t ({cpu_type()})"}  # ran in Ray workers
    assert numbers(tmp_path / "results") == numbers(root / "results")
    assert Cache(tmp_path / "cache").verify() == []


def test_shipped_configs_dry_run(tmp_path):
    """configs/partial_cpu.yaml and configs/transfer_cpu.yaml are valid and plan as documented."""
    from click.testing import CliRunner

    from bench.cli import main

    configs = Path(__file__).resolve().parents[1] / "configs"
    cli = CliRunner()
    args = ["--results-dir", str(tmp_path / "r"), "--cache-dir", str(tmp_path / "c"), "--dry-run"]
    out = cli.invoke(main, ["run", str(configs / "partial_cpu.yaml"), *args])
    assert out.exit_code == 0, out.output
    # 3 ratios × 1 attack + 2 baselines (20%, 50%); one δ serves all three ratios
    assert "5 cells: 0 done, 5 to compute" in out.output and "poisons needed by them: 1: 0 cached, 1 to generate" in out.output
    assert "clean-only baselines: 2" in out.output
    out = cli.invoke(main, ["run", str(configs / "transfer_cpu.yaml"), *args])
    assert out.exit_code == 0, out.output
    # (none + em-sample × 2 sources) × 2 targets; 3 poisons
    assert "6 cells: 0 done, 6 to compute" in out.output and "3 to generate" in out.output
    assert "source convnet_cifar" in out.output and "source mlp" in out.output


def test_transfer_generates_each_source_poison_once_and_trains_every_target(tmp_path):
    """Going Grayscale Table 6 in miniature: EM made on an MLP and on a convnet, both targets trained on each."""
    em = {"name": "em-sample", "params": {"max_rounds": 1, "train_steps": 1, "pgd_steps": 1, "batch_size": 100}}
    m = matrix(
        datasets=[{"name": "cifar10-mini", "n_train": 100, "n_test": 100}],
        attacks=[em],
        source_archs=["mlp", "convnet_cifar"],
        archs=["mlp", "convnet_cifar"],
        seeds=[0],
    )
    s = run(m, tmp_path / "r", tmp_path / "c")
    assert (s.ok, s.failed, s.poisons_generated) == (4, 0, 2)
    rows = read_rows(tmp_path / "r" / "sched.csv")
    assert sorted((r.source_arch, r.arch) for r in rows) == sorted(
        (src, dst) for src in ("mlp", "convnet_cifar") for dst in ("mlp", "convnet_cifar")
    )
    assert all(f"source_arch={r.source_arch}" in r.attack for r in rows)  # one leaderboard row per source
    assert {json.loads(r.attack_stats)["source_arch"] for r in rows} == {"mlp", "convnet_cifar"}


def test_a_plugin_version_bump_makes_its_cells_new(monkeypatch):
    """A plugin that changes what its params compute bumps its version: its cells are no
    longer done (and its poisons not reused); version "1" leaves existing keys unchanged."""
    import dataclasses

    m = matrix(attacks=["none", {"name": "random", "params": {"mode": "class"}}])
    before = {c.poison.attack.name if c.poison.attack else "-": c.key for c in plan(m).cells}
    entry = ATTACKS.get("random")
    monkeypatch.setitem(ATTACKS._entries, "random", dataclasses.replace(entry, version="2"))
    after = {c.poison.attack.name if c.poison.attack else "-": c.key for c in plan(m).cells}
    assert after["random"] != before["random"] and after["none"] == before["none"]
