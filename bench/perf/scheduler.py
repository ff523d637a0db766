"""``python -m bench.perf scheduler``: the scheduler at scale, with no training.

A matrix of 10 attacks × 10 defense stacks × 10 archs × 10 seeds = 10,000 cells on the built-in
cifar10-mini, every cell's row already in its results file. Timed: planning it (every key),
the dry run (`plan_status`: the dataset job, the results file, the cache), and a resume
(`run_matrix`, which finds everything done), in this process and as `uebench run` commands
(start-up and imports included); then one more row appended to the 10,000-row file against
one appended to an empty file. Targets: ≤ 10 s each, and an append that does not grow
with the file.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

ARCHS = ["mlp", "convnet_cifar", "resnet18_cifar", "resnet50_cifar", "vgg11_cifar", "vgg16_cifar", "wrn28_10", "wrn34_10",
         "densenet121_cifar", "resnet18"]
DEFENSES = ["standard", "grayscale", "mixup", "cutout", "cutmix", "at", *[{"name": "bdr", "params": {"bits": b}} for b in (2, 4)],
            *[{"name": "jpeg", "params": {"quality": q}} for q in (10, 50)]]


def matrix(n_attacks: int, n_defenses: int, n_archs: int, n_seeds: int) -> dict:
    return {
        "name": "scale",
        "datasets": ["cifar10-mini"],
        "attacks": [{"name": "random", "params": {"epsilon": 1 + i}} for i in range(n_attacks)],
        "defenses": DEFENSES[:n_defenses],
        "archs": ARCHS[:n_archs],
        "seeds": list(range(n_seeds)),
    }


def bench_scheduler(dims: tuple[int, int, int, int]) -> dict:
    from bench.config import parse_matrix
    from bench.plan import plan
    from bench.results import ResultRow, render
    from bench.scheduler import env_for, plan_status, run_matrix
    from bench.store import ResultStore

    m = parse_matrix(matrix(*dims))
    out = {}
    t0 = time.perf_counter()
    p = plan(m)
    out["plan"] = time.perf_counter() - t0
    out["cells"] = len(p.cells)
    row = dict(
        status="ok", matrix="scale", dataset="cifar10-mini", attack="a", attack_name="random", attack_params="{}", defense="d",
        defense_params="[]", arch="mlp", source_arch="", poison_ratio=1.0, seed=0, epochs=1, n_train=2000, n_test=500,
        clean_acc_final=50.0, clean_acc_peak=50.0, peak_epoch=0, train_acc_final=50.0, threat="linf=8/255", epsilon=8.0,
        poison_linf=8.0, poison_l2=1.0, poison_psnr=35.0, apply_mode="signed/round", attack_stats="{}", defense_cost=1.0,
        defense_report="{}", train_config="{}", gen_seconds=0.0, train_seconds=1.0, images_per_second=1.0, device="cpu:2t",
        dataset_fingerprint="0" * 16, python_version="3", torch_version="2", timm_version="1", uebench_version="0",
        plugins="{}", git_commit="x", config_hash="0" * 16, timestamp="2026-12-01T00:00:00+00:00",
    )
    with tempfile.TemporaryDirectory() as tmp:
        results, cache = Path(tmp) / "results", Path(tmp) / "cache"
        results.mkdir()
        rows = [ResultRow(**row, cell_hash=c.key) for c in p.cells]
        (results / "scale.csv").write_text(render(rows))
        t0 = time.perf_counter()
        st = plan_status(m, results, env_for(Path(tmp), cache))
        out["dry_run"] = time.perf_counter() - t0
        assert len(st.done) == len(p.cells) and not st.todo
        t0 = time.perf_counter()
        s = run_matrix(m, results, Path(tmp), cache_dir=cache)
        out["resume"] = time.perf_counter() - t0
        assert s.skipped == len(p.cells) and s.trained == 0
        import subprocess
        import sys

        import yaml

        cfg = Path(tmp) / "scale.yaml"
        cfg.write_text(yaml.safe_dump(matrix(*dims)))
        for name, extra in (("cli_dry_run", ["--dry-run"]), ("cli_resume", ["--no-leaderboard"])):
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "bench.cli", "run", str(cfg), "--results-dir", str(results), "--cache-dir", str(cache), *extra],
                                  capture_output=True, text=True)
            out[name] = time.perf_counter() - t0
            assert proc.returncode == 0, proc.stderr[-2000:]
        store, empty = ResultStore(results, "scale"), ResultStore(Path(tmp) / "empty", "scale")
        extra = ResultRow(**row, cell_hash="f" * 16)
        empty.append(extra)  # creates the file: not what is timed
        times = {}
        for name, st_ in (("full", store), ("empty", empty)):
            t0 = time.perf_counter()
            for i in range(20):
                st_.append(extra.model_copy(update={"cell_hash": f"{i:016x}"}))
            times[name] = (time.perf_counter() - t0) / 20
        out["append_full"], out["append_empty"] = times["full"], times["empty"]
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dims", default="10,10,10,10", help="attacks,defenses,archs,seeds (their product is the cell count)")


def run(a: argparse.Namespace) -> int:
    dims = tuple(int(x) for x in a.dims.split(","))
    r = bench_scheduler(dims)
    print(f"matrix of {r['cells']:,} cells, every row already recorded")
    print(f"  plan (every cell's key):        {r['plan']:6.2f} s")
    print(f"  dry run (uebench run --dry-run): {r['dry_run']:6.2f} s")
    print(f"  resume (uebench run, all done):  {r['resume']:6.2f} s")
    print(f"  the same as commands, Python start-up and imports included: uebench run --dry-run {r['cli_dry_run']:.2f} s, "
          f"uebench run {r['cli_resume']:.2f} s")
    print(f"  append one row to the {r['cells']:,}-row file: {r['append_full'] * 1e3:.2f} ms; to a 1-row file: {r['append_empty'] * 1e3:.2f} ms")
    return 0
