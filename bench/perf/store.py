"""``python -m bench.perf store``: the cost of appending a result row, by file size.

A long matrix appends one row per cell. uebench appends each row with one write at the end
of the file (`bench.store.ResultStore.append`), so the cost is the same at row 10,000 as at
row 1. The way it used to be done, and the way a naive store does it, rewrites the whole
file atomically on every append (read and validate every row, write them all, rename): the
cost of one append grows with the rows there, and a matrix's total with their square.

Both run side by side here on the same rows: the append store for all ``--rows`` rows, timed
per block of appends; the rewriting store at a few file sizes (a few appends each), from
which its total for ``--rows`` rows is integrated (timing all of it would take hours).
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def _rows(n: int):
    from bench.results import ResultRow

    base = dict(
        status="ok", matrix="perf", dataset="cifar10", attack="em-sample", attack_name="em-sample",
        attack_params='{"epsilon":8.0}', defense="standard", defense_params='[{"name":"standard","params":{}}]',
        arch="resnet18_cifar", source_arch="resnet18_cifar", poison_ratio=1.0, epochs=60, n_train=50000, n_test=10000,
        clean_acc_final=19.93, clean_acc_peak=25.1, peak_epoch=3, train_acc_final=99.5, threat="linf=8/255", epsilon=8.0,
        poison_linf=8.0, poison_l2=1.7, poison_psnr=34.1, apply_mode="signed/round", attack_stats='{"rounds":12}',
        defense_cost=1.0, defense_report="{}", train_config='{"epochs":60}', gen_seconds=0.0, train_seconds=1234.5,
        images_per_second=2400.0, device="cuda:A100", dataset_fingerprint="0" * 16, python_version="3.11",
        torch_version="2.14.1", timm_version="1.0", uebench_version="0.2.0", plugins='{"attack":"builtin"}',
        git_commit="abcdef123456", config_hash="f" * 16, timestamp="2026-12-01T00:00:00+00:00",
    )
    return [ResultRow(cell_hash=f"{i:016x}", seed=i % 5, **base) for i in range(n)]


def _rewrite_append(store, row) -> None:
    """The rewriting store: read every row, add one, write the file anew (atomically)."""
    with store.lock:
        store._write([r for r in store.rows() if r.cell_hash != row.cell_hash] + [row])


def bench_store(n: int, block: int, sizes: list[int], samples: int) -> dict:
    from bench.results import render
    from bench.store import ResultStore

    rows = _rows(max(n, max(sizes) + samples))
    out: dict = {"n": n}
    with tempfile.TemporaryDirectory() as tmp:
        store = ResultStore(Path(tmp) / "append", "perf")
        blocks = []
        t_all = time.perf_counter()
        for s in range(0, n, block):
            t0 = time.perf_counter()
            for r in rows[s : s + block]:
                store.append(r)
            blocks.append((time.perf_counter() - t0) / len(rows[s : s + block]))
        out["append_total"] = time.perf_counter() - t_all
        out["append_first"], out["append_last"] = blocks[0], blocks[-1]
        assert len(store.rows()) == n
        per_size = {}
        for size in sizes:
            rw = ResultStore(Path(tmp) / f"rewrite{size}", "perf")
            rw.dir.mkdir(parents=True)
            rw.path.write_text(render(rows[:size]))
            times = []
            for r in rows[size : size + samples]:
                t0 = time.perf_counter()
                _rewrite_append(rw, r)
                times.append(time.perf_counter() - t0)
            per_size[size] = statistics.median(times)
        out["rewrite_per_size"] = per_size
    # the rewrite cost is linear in the rows there: fit a + b*size and integrate over 0..n-1
    xs, ys = list(per_size), list(per_size.values())
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / max(1e-12, sum((x - mx) ** 2 for x in xs))
    a = my - b * mx
    out["rewrite_total_estimate"] = a * n + b * n * (n - 1) / 2
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rows", type=int, default=10_000, help="rows to append")
    p.add_argument("--block", type=int, default=500, help="appends per timed block")
    p.add_argument("--sizes", default="100,1000,5000,10000", help="file sizes at which to time the rewriting store")
    p.add_argument("--samples", type=int, default=5, help="rewriting appends timed at each size")


def run(a: argparse.Namespace) -> int:
    sizes = [int(s) for s in a.sizes.split(",")]
    r = bench_store(a.rows, a.block, sizes, a.samples)
    print(f"appending {r['n']:,} result rows")
    print(f"  append store (one write per row): {r['append_total']:.2f} s in all; "
          f"{r['append_first'] * 1e3:.2f} ms per row in the first {a.block}, {r['append_last'] * 1e3:.2f} ms in the last {a.block}")
    for size, t in r["rewrite_per_size"].items():
        print(f"  rewriting store, one append to a file of {size:>6,} rows: {t * 1e3:8.1f} ms")
    est = r["rewrite_total_estimate"]
    print(f"  rewriting store, {r['n']:,} rows in all (integrated from the above): {est:,.0f} s")
    print(f"  ratio rewriting / append for {r['n']:,} rows: {est / r['append_total']:,.0f}x;"
          f" last/first per-row append cost: {r['append_last'] / r['append_first']:.2f}")
    return 0
