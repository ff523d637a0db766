"""Submitting results: validate refuses what is not a faithful record, verify re-runs cells,
CI rebuilds the leaderboard, scratch runs stay scratch, poisons travel in and out, and an
outside plugin package installs and shows up."""
from __future__ import annotations

import csv
import io
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import DATA, REPO, TINY_CONFIG, run_cli

from bench.results import read_rows, render


def _lines(path: Path) -> list[list[str]]:
    with open(path, newline="") as fh:
        return list(csv.reader(fh))


def _write(path: Path, lines: list[list[str]]) -> None:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(lines)
    path.write_text(buf.getvalue())


def _edit(path: Path, column: str, value: str, attack: str = "none") -> int:
    """Set ``column`` of the first row of ``attack``; returns its file line number."""
    lines = _lines(path)
    i = next(k for k, r in enumerate(lines) if k and r[lines[0].index("attack_name")] == attack)
    lines[i][lines[0].index(column)] = value
    _write(path, lines)
    return i + 1


@pytest.fixture
def submission(tiny_run, tmp_path) -> Path:
    """A copy of a real results folder (the tiny matrix), as someone would submit it."""
    _, results, _, _ = tiny_run
    out = tmp_path / "results"
    shutil.copytree(results, out)
    # the rows of the test session come from this checkout, which may be modified right now
    rows = [r.model_copy(update={"git_commit": r.git_commit.removesuffix("-dirty")}) for r in read_rows(out / "tiny.csv")]
    (out / "tiny.csv").write_text(render(rows))
    return out


def validate(*paths) -> subprocess.CompletedProcess:
    return run_cli("validate", *map(str, paths))


def test_validate_accepts_a_real_submission(submission):
    out = validate(submission)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "valid" in out.stderr


@pytest.mark.parametrize(
    "damage,expect",
    [
        (lambda p: _write(p, [[c for i, c in enumerate(r) if i != 3] for r in _lines(p)]), "tiny.csv:1: missing column(s) dataset"),
        (lambda p: _edit(p, "seed", "zero"), "tiny.csv:2: seed: Input should be a valid integer"),
        (lambda p: _edit(p, "clean_acc_final", "137.5"), "tiny.csv:2: clean_acc_final: Input should be less than or equal to 100"),
        (lambda p: _edit(p, "poison_linf", "12.0", "random"), "poison_linf 12 exceeds the declared budget linf=8/255"),
        (lambda p: _write(p, _lines(p) + [_lines(p)[1]]), "tiny.csv:6: cell"),
        (lambda p: _edit(p, "cell_hash", "0123456789abcdef"), "tiny.csv:2: cell_hash 0123456789abcdef is not the hash of its cell_spec"),
        (lambda p: _edit(p, "arch", "resnet18_cifar"), "tiny.csv:2: arch: 'resnet18_cifar' disagrees with its cell_spec"),
        (lambda p: _edit(p, "attack_name", "mystery", "random"), "attack 'mystery' is said to be built in but is not registered here"),
        (lambda p: _edit(p, "git_commit", "abc123-dirty"), "made from a modified checkout"),
        (lambda p: _edit(p, "torch_version", ""), "torch_version: missing provenance"),
    ],
)
def test_validate_rejects_each_kind_of_broken_submission_with_its_line(submission, damage, expect):
    damage(submission / "tiny.csv")
    out = validate(submission)
    assert out.returncode == 1 and expect in out.stdout, out.stdout + out.stderr
    assert all(line.startswith(str(submission)) for line in out.stdout.splitlines())


def test_validate_refuses_anything_but_plain_csv_and_json(submission):
    (submission / "model.pkl").write_bytes(pickle.dumps({"acc": 99}))
    (submission / "sneaky.csv").write_bytes(pickle.dumps([1, 2, 3]))
    (submission / "curves" / "0000000000000000.json").write_text("NaN")
    out = validate(submission)
    assert out.returncode == 1
    assert "model.pkl: a pickle; a submission holds plain CSV results and JSON curves only" in out.stdout
    assert "sneaky.csv: not a uebench results file" in out.stdout
    assert "0000000000000000.json: not plain JSON" in out.stdout


def test_verify_reproduces_cells_exactly_and_flags_an_edited_accuracy(submission):
    out = run_cli("verify", str(submission / "tiny.csv"), "--cells", "2", "--data-root", str(DATA))
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("ok        ") == 2 and "2 of 2 cells reproduced (tolerance 0)" in out.stderr
    assert "note:" not in out.stdout  # made on this CPU type: an exact match is the claim
    rows = read_rows(submission / "tiny.csv")
    other = "cpu:1t (AVX512, Some Other CPU)"
    edited = [r.model_copy(update={"clean_acc_final": min(100.0, r.clean_acc_final + 0.5), "device": other}) for r in rows]
    (submission / "tiny.csv").write_text(render(edited))
    out = run_cli("verify", str(submission / "tiny.csv"), "--cells", "1", "--data-root", str(DATA))
    assert out.returncode == 1 and "MISMATCH" in out.stdout and "clean_acc_final: recorded" in out.stdout
    assert "note: its exploiter ran on another CPU type (AVX512, Some Other CPU)" in out.stdout


def test_verify_says_when_a_row_comes_from_another_cpu_type(submission, monkeypatch):
    """Floats differ across CPU types (kernel family, model): a row made elsewhere, or one that
    does not say where, cannot be expected to match bit for bit, and verify says which part."""
    import torch

    from bench.device import device_name
    from bench.verify import cpu_note

    (row,) = read_rows(submission / "tiny.csv")[:1]
    here = device_name(torch.device("cpu"))
    stats = json.loads(row.attack_stats)

    def with_poison_device(device: str):
        return row.model_copy(update={"device": here, "attack_stats": json.dumps({**stats, "poison": {**stats["poison"], "device": device}})})

    assert cpu_note(with_poison_device(here), "cpu") == ""
    assert cpu_note(with_poison_device(here), "cuda") == ""  # a GPU re-check states its tolerance anyway
    assert "its exploiter ran on a CPU whose type the row does not record" in cpu_note(row.model_copy(update={"device": "cpu:1t"}), "cpu")
    assert "its poison ran on another CPU type (AVX2, Elsewhere)" in cpu_note(with_poison_device("cpu:2t (AVX2, Elsewhere)"), "cpu")
    assert "not a CPU" in cpu_note(row.model_copy(update={"device": "cuda:NVIDIA A100"}), "cpu")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "SSE41")  # convolutions on another instruction set: another CPU type
    assert "ONEDNN_MAX_CPU_ISA=SSE41" in device_name(torch.device("cpu"))
    assert "its exploiter ran on another CPU type" in cpu_note(with_poison_device(here), "cpu")


def test_ci_check_fails_on_a_hand_edited_result_or_leaderboard(submission, tmp_path):
    root = submission.parent
    env = {**os.environ, "UEBENCH": str(Path(sys.executable).parent / "uebench")}
    assert run_cli("leaderboard", "--results-dir", "results", cwd=root).returncode == 0
    script = str(REPO / "scripts" / "check_published.sh")
    ok = subprocess.run(["bash", script, str(root)], capture_output=True, text=True, env=env)
    assert ok.returncode == 0, ok.stderr
    md = (root / "leaderboard.md").read_text()
    (root / "leaderboard.md").write_text(md.replace("(2)", "(3)", 1))  # the leaderboard edited by hand
    bad = subprocess.run(["bash", script, str(root)], capture_output=True, text=True, env=env)
    assert bad.returncode == 1 and "leaderboard.md is not what `uebench leaderboard` builds" in bad.stderr
    (root / "leaderboard.md").write_text(md)
    _edit(submission / "tiny.csv", "clean_acc_final", "0.5")  # a plausible number edited into a row
    bad = subprocess.run(["bash", script, str(root)], capture_output=True, text=True, env=env)
    assert bad.returncode == 1 and "leaderboard.md is not what `uebench leaderboard` builds" in bad.stderr
    assert "fix: run `uebench leaderboard`" in bad.stderr


def test_a_run_without_results_dir_never_touches_the_published_results(tmp_path):
    """In a checkout: results/ and leaderboard.md stay byte-identical; the rows go to runs/<matrix>/."""
    (tmp_path / "results").mkdir()
    published = tmp_path / "results" / "tiny.csv"
    published.write_text("sentinel\n")
    (tmp_path / "leaderboard.md").write_text("# published\n")
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY_CONFIG)
    proc = run_cli("run", str(cfg), cwd=tmp_path, env={**os.environ, "UEBENCH_CACHE": str(tmp_path / "cache")})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert published.read_text() == "sentinel\n" and (tmp_path / "leaderboard.md").read_text() == "# published\n"
    assert len(read_rows(tmp_path / "runs" / "tiny" / "tiny.csv")) == 4
    assert (tmp_path / "runs" / "tiny" / "leaderboard.md").is_file() and (tmp_path / "runs" / "tiny" / "leaderboard.csv").is_file()


def test_a_poison_exported_as_npz_or_pngs_evaluates_like_the_attack_that_made_it(tmp_path):
    env = {**os.environ, "UEBENCH_CACHE": str(tmp_path / "cache")}
    base = {"name": "made", "datasets": [{"name": "cifar10-mini", "n_train": 300, "n_test": 200}], "archs": ["mlp"], "seeds": [0],
            "train": {"epochs": 2, "batch_size": 64, "lr": 0.05}}
    import yaml

    made = tmp_path / "made.yaml"
    made.write_text(yaml.safe_dump({**base, "attacks": [{"name": "random", "params": {"mode": "sample"}}]}))
    assert run_cli("run", str(made), "--results-dir", str(tmp_path / "r"), "--no-leaderboard", env=env).returncode == 0
    digests = {}
    for fmt, out in (("npz", tmp_path / "p.npz"), ("png", tmp_path / "pngs")):
        proc = run_cli("export", "poison", str(made), "--format", fmt, "--out", str(out), env=env)
        assert proc.returncode == 0, proc.stderr
        digests[fmt] = proc.stdout.split("sha256 ")[1].strip()
    assert len(list((tmp_path / "pngs").glob("*.png"))) == 300
    ext = [{"name": "external", "label": f"ext-{fmt}", "params": {"path": str(path), "sha256": digests[fmt]}}
           for fmt, path in (("npz", tmp_path / "p.npz"), ("png", tmp_path / "pngs"))]
    outside = tmp_path / "outside.yaml"
    outside.write_text(yaml.safe_dump({**base, "name": "outside", "attacks": ext}))
    proc = run_cli("run", str(outside), "--results-dir", str(tmp_path / "r"), "--no-leaderboard", env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (mine,) = read_rows(tmp_path / "r" / "made.csv")
    theirs = {r.attack: r for r in read_rows(tmp_path / "r" / "outside.csv")}
    for label in ("ext-npz", "ext-png"):
        r = theirs[label]
        same = ("clean_acc_final", "train_acc_final", "poison_linf", "poison_l2")
        assert [getattr(r, f) for f in same] == [getattr(mine, f) for f in same]
        assert json.loads(r.attack_stats)["pinned"] is True
    # a poison over its declared budget fails its cells; a missing file is refused before any work
    over = tmp_path / "over.yaml"
    over.write_text(yaml.safe_dump({**base, "name": "over", "attacks": [{"name": "external", "params": {"path": str(tmp_path / "p.npz"), "epsilon": 4}}]}))
    proc = run_cli("run", str(over), "--results-dir", str(tmp_path / "r"), "--no-leaderboard", env=env)
    assert proc.returncode == 1 and "linf budget linf=4/255 breached: measured 8" in proc.stderr
    missing = tmp_path / "missing.yaml"
    missing.write_text(yaml.safe_dump({**base, "name": "missing", "attacks": [{"name": "external", "params": {"path": str(tmp_path / "nope.npz")}}]}))
    proc = run_cli("run", str(missing), "--results-dir", str(tmp_path / "r"), env=env)
    assert proc.returncode == 2 and "attacks[0] (external): params.path:" in proc.stderr and "does not exist" in proc.stderr


def test_the_example_plugin_package_installs_lists_runs_and_reaches_the_leaderboard(tmp_path):
    site = tmp_path / "site"
    pip = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(site),
         str(REPO / "examples" / "uebench-plugin-example")],
        capture_output=True, text=True,
    )
    assert pip.returncode == 0, pip.stderr[-2000:]
    env = {**os.environ, "PYTHONPATH": str(site), "UEBENCH_CACHE": str(tmp_path / "cache")}
    listed = run_cli("list", "attacks", "check*", "--params", env=env)
    assert listed.returncode == 0 and listed.stdout.startswith("checkerboard") and "uebench-plugin-example==0.1.0" in listed.stdout
    assert "epsilon" in listed.stdout and "L∞ budget" in listed.stdout
    cfg = tmp_path / "ex.yaml"
    cfg.write_text(TINY_CONFIG.replace("name: tiny", "name: ex").replace("  - {name: random, params: {mode: class, epsilon: 8}}", "  - checkerboard"))
    proc = run_cli("run", str(cfg), "--results-dir", str(tmp_path / "r"), env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [r for r in read_rows(tmp_path / "r" / "ex.csv") if r.attack == "checkerboard"]
    assert len(rows) == 2 and all(json.loads(r.plugins)["attack"] == "uebench-plugin-example==0.1.0" and r.poison_linf == 8.0 for r in rows)
    assert "| checkerboard |" in (tmp_path / "r" / "leaderboard.md").read_text()


def test_only_code_changes_make_a_checkout_dirty(tmp_path):
    """A row's commit says which code made it: uebench's own outputs (results/, the
    leaderboard and its figures) changing between two publishing runs leave it clean; any
    other tracked file changing marks it ``-dirty``."""
    from bench.provenance import checkout_state

    git = lambda *a: subprocess.run(["git", "-C", str(tmp_path), *a], check=True, capture_output=True, text=True)
    for rel in ("bench/x.py", "results/m.csv", "leaderboard.md", "leaderboard.csv", "leaderboard/s-heatmap.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("v1\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    sha = git("rev-parse", "--short=12", "HEAD").stdout.strip()
    assert checkout_state(tmp_path) == sha
    for rel in ("results/m.csv", "leaderboard.md", "leaderboard.csv", "leaderboard/s-heatmap.png"):
        (tmp_path / rel).write_text("v2\n")
    (tmp_path / "untracked.txt").write_text("scratch\n")
    assert checkout_state(tmp_path) == sha
    (tmp_path / "bench" / "x.py").write_text("v2\n")
    assert checkout_state(tmp_path) == f"{sha}-dirty"
    assert checkout_state(tmp_path / "not-a-repo") == "unknown"


def test_verify_remakes_a_poison_on_the_threads_it_was_made_with(tmp_path):
    """A cached poison may come from another run on another CPU thread count, and EM's noise
    depends on it (float sums in another order): each row records where its poison was made,
    and verify remakes the poison there before it trains on the row's own threads."""
    import torch

    from bench.config import parse_matrix
    from bench.device import cpu_type
    from bench.scheduler import run_matrix
    from bench.verify import poison_device, verify

    em = {"source_arch": "convnet_cifar", "source_model_kwargs": {"width": 4}, "batch_size": 100, "pgd_steps": 2, "step_size": 2, "max_rounds": 2}
    m = parse_matrix({
        "name": "threads", "datasets": [{"name": "cifar10-mini", "n_train": 200, "n_test": 100}],
        "attacks": [{"name": "em-sample", "params": em}], "defenses": ["standard"], "archs": ["mlp"],
        "train": {"epochs": 1, "batch_size": 50, "lr": 0.05},
    })
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        run_matrix(m, tmp_path / "first", DATA, cache_dir=tmp_path / "cache")
        torch.set_num_threads(1)
        run_matrix(m, tmp_path / "second", DATA, cache_dir=tmp_path / "cache")  # the poison from the first run's cache
        made_here = run_matrix(m, tmp_path / "third", DATA, cache_dir=tmp_path / "fresh")  # the poison made on 1 thread
    finally:
        torch.set_num_threads(old)
    (row,) = read_rows(tmp_path / "second" / "threads.csv")
    (other,) = read_rows(tmp_path / "third" / "threads.csv")
    here = cpu_type()
    assert made_here.failed == 0 and row.device == other.device == f"cpu:1t ({here})"
    assert poison_device(row) == f"cpu:2t ({here})" and poison_device(other) == f"cpu:1t ({here})"
    assert row.poison_l2 != other.poison_l2  # the thread count changed the noise
    (check,) = verify(tmp_path / "second" / "threads.csv", 1, 0, DATA)
    assert check.error == "" and check.differences == {}, check.differences
