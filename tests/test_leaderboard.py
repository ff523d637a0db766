"""leaderboard.md is derived from result rows, deterministically."""
from __future__ import annotations

import csv
import random
import shutil

from bench.leaderboard import build
from bench.results import read_rows


def test_leaderboard_is_byte_identical_for_the_same_rows_in_any_order(tiny_run, tmp_path):
    _, results, _, _ = tiny_run
    first = build(results)
    assert build(results) == first
    shuffled = tmp_path / "results"
    shuffled.mkdir()
    with open(results / "tiny.csv") as fh:
        lines = list(csv.reader(fh))
    body = lines[1:]
    random.Random(1).shuffle(body)
    # split the rows over two files: the leaderboard reads results/*.csv together
    for name, part in (("a.csv", body[:2]), ("b.csv", body[2:])):
        with open(shuffled / name, "w", newline="") as fh:
            csv.writer(fh, lineterminator="\n").writerows([lines[0], *part])
    assert build(shuffled) == first


def test_cells_are_mean_and_std_over_seeds_with_clean_row_first(tiny_run):
    _, results, _, _ = tiny_run
    rows = [r for r in read_rows(results / "tiny.csv") if r.attack == "none"]
    accs = sorted(r.clean_acc_final for r in rows)
    mean = sum(accs) / 2
    std = abs(accs[1] - accs[0]) / 2**0.5
    text = build(results)
    assert f"{mean:.2f} ± {std:.2f} (2)" in text
    table = text.split("**Final clean test accuracy (%)**")[1]
    body = [ln for ln in table.splitlines() if ln.startswith("|")][2:]
    assert body[0].split("|")[1].strip() == "none"
    assert body[1].split("|")[1].strip() == "random[mode=class]"


def test_failed_rows_are_counted_not_shown(tiny_run, tmp_path):
    _, results, _, _ = tiny_run
    d = tmp_path / "r"
    shutil.copytree(results, d)
    with open(d / "tiny.csv") as fh:
        lines = list(csv.reader(fh))
    header = lines[0]
    bad = dict(zip(header, lines[1]))
    bad.update(status="failed", cell_hash="f" * 16, attack="broken", clean_acc_final="", clean_acc_peak="", error="boom")
    with open(d / "tiny.csv", "a", newline="") as fh:
        csv.writer(fh, lineterminator="\n").writerow([bad[h] for h in header])
    text = build(d)
    assert "1 failed runs not shown" in text and "broken" not in text


def test_empty_results_give_a_hint(tmp_path):
    assert "No results yet" in build(tmp_path)
