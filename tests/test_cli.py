"""The `uebench` command end to end, in subprocesses, on the built-in real data."""
from __future__ import annotations

import csv
import json

from conftest import run_cli

from bench.results import ResultRow, read_rows


def test_run_writes_rows_with_provenance_and_prints_the_leaderboard(tiny_run):
    cfg, results, proc, _ = tiny_run
    rows = read_rows(results / "tiny.csv")
    assert len(rows) == 4 and {r.status for r in rows} == {"ok"}
    assert {(r.attack, r.seed) for r in rows} == {(a, s) for a in ("none", "random[mode=class]") for s in (0, 1)}
    for r in rows:
        assert r.n_train == 300 and r.n_test == 200 and r.epochs == 2 and r.arch == "mlp"
        assert 0 <= r.clean_acc_final <= 100 and r.clean_acc_peak >= r.clean_acc_final
        assert r.torch_version and r.timm_version and r.python_version and r.device.startswith("cpu")
        assert r.git_commit and len(r.config_hash) == 16 and r.timestamp.endswith("+00:00")
        assert (results / "curves" / f"{r.cell_hash}.json").exists()
        assert r.train_seconds > 0
    rnd = [r for r in rows if r.attack_name == "random"]
    assert all(r.poison_linf == 8.0 and r.threat == "linf=8/255" and r.epsilon == 8.0 for r in rnd)
    assert json.loads(rnd[0].attack_params) == {"epsilon": 8.0, "mode": "class"}
    with open(results / "tiny.csv") as fh:
        assert next(csv.reader(fh)) == ResultRow.columns()
    assert "## cifar10-mini · mlp" in proc.stdout
    assert "|               none |" in proc.stdout or "| none" in proc.stdout.replace("  ", " ")
    assert (results / "leaderboard.md").read_text() in proc.stdout


def test_rerun_of_a_finished_matrix_trains_nothing(tiny_run):
    cfg, results, _, env = tiny_run
    before = (results / "tiny.csv").read_bytes()
    proc = run_cli("run", str(cfg), "--results-dir", str(results), "--no-leaderboard", env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (results / "tiny.csv").read_bytes() == before


def test_prune_removes_the_rows_of_cells_an_edited_config_dropped(tiny_run, tmp_path):
    import shutil

    from conftest import TINY_CONFIG

    cfg, results, _, env = tiny_run
    res = tmp_path / "results"
    shutil.copytree(results, res)
    edited = tmp_path / "tiny.yaml"
    edited.write_text(TINY_CONFIG.replace("seeds: [0, 1]", "seeds: [0]"))
    before = read_rows(res / "tiny.csv")
    dropped = {r.cell_hash for r in before if r.seed == 1}
    assert len(dropped) == 2 and all((res / "curves" / f"{h}.json").exists() for h in dropped)

    dry = run_cli("run", str(edited), "--results-dir", str(res), "--dry-run", env=env)
    assert dry.returncode == 0 and "2 rows in" in dry.stderr and f"uebench prune {edited}" in dry.stderr
    listed = run_cli("prune", str(edited), "--results-dir", str(res), "--dry-run", env=env)
    assert listed.stdout.count("would remove") == 2 and len(read_rows(res / "tiny.csv")) == 4

    # another matrix in the folder with one of the dropped cells keeps that cell's curve
    shared = next(r for r in before if r.cell_hash in dropped)
    lines = (res / "tiny.csv").read_text().splitlines()
    (res / "other.csv").write_text("\n".join([lines[0], *[ln for ln in lines[1:] if ln.startswith(shared.cell_hash)]]) + "\n")

    done = run_cli("prune", str(edited), "--results-dir", str(res), env=env)
    assert done.returncode == 0 and done.stdout.count("removed:") == 2
    after = read_rows(res / "tiny.csv")
    assert {r.cell_hash for r in after} == {r.cell_hash for r in before} - dropped
    assert [h for h in dropped if (res / "curves" / f"{h}.json").exists()] == [shared.cell_hash]
    assert "0 stale rows removed" in run_cli("prune", str(edited), "--results-dir", str(res), env=env).stderr


def test_misspelled_key_exits_nonzero_with_one_line_and_writes_nothing(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("datasets: [cifar10-mini]\nattacks: [none]\narchs: [mlp]\ntrain: {epocs: 1}\n")
    out = tmp_path / "results"
    proc = run_cli("run", str(cfg), "--results-dir", str(out), cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "train.epocs: unknown field; did you mean 'epochs'?" in lines[0]
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]


def test_unknown_arch_fails_before_any_work(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("datasets: [cifar10-mini]\nattacks: [none]\narchs: [resnet18_cfar]\n")
    proc = run_cli("run", str(cfg), "--results-dir", str(tmp_path / "r"), cwd=tmp_path)
    assert proc.returncode == 2 and "resnet18_cifar" in proc.stderr
    assert not (tmp_path / "r").exists()


def test_list_commands():
    proc = run_cli("list", "models", "*cifar*")
    names = proc.stdout.split()
    assert {"resnet18_cifar", "vgg11_cifar", "densenet121_cifar", "convnet_cifar"} <= set(names)
    proc = run_cli("list", "attacks")
    names = [ln.split()[0] for ln in proc.stdout.splitlines() if not ln.startswith(" ")]
    assert proc.returncode == 0 and {"none", "random"} <= set(names) and names == sorted(names)
    refs = [ln.strip() for ln in proc.stdout.splitlines() if ln.startswith(" ")]
    assert "reference: Huang et al. ICLR 2021 (EM); HanxunH/Unlearnable-Examples perturbation.py" in refs  # each plugin's paper
    proc = run_cli("list", "attacks", "random", "--params")
    assert "epsilon" in proc.stdout and "L∞ budget in /255 units" in proc.stdout and "mode" in proc.stdout
    proc = run_cli("list", "datasets", "cifar*")
    assert "cifar10-mini" in proc.stdout and "svhn" not in proc.stdout
    proc = run_cli("list", "gadgets")
    assert proc.returncode == 2
