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


def test_rows_with_other_params_or_training_settings_are_never_pooled(tiny_run, tmp_path):
    """A config edited between runs leaves rows under the same label with other params: the
    leaderboard shows them apart instead of averaging different experiments."""
    _, results, _, _ = tiny_run
    d = tmp_path / "r"
    shutil.copytree(results, d)
    with open(d / "tiny.csv") as fh:
        lines = list(csv.reader(fh))
    header, first = lines[0], dict(zip(lines[0], lines[1]))
    other_attack = {**first, "cell_hash": "a" * 16, "attack_params": first["attack_params"].replace("}", ',"x":1}')}
    other_train = {**first, "cell_hash": "b" * 16, "train_config": first["train_config"].replace("}", ',"x":1}')}
    with open(d / "tiny.csv", "a", newline="") as fh:
        csv.writer(fh, lineterminator="\n").writerows([[r[h] for h in header] for r in (other_attack, other_train)])
    text = build(d)
    assert text.count(f"{first['attack']} #") == 4  # two variants, in the final and the peak table
    titles = [ln for ln in text.splitlines() if ln.startswith("## ")]
    assert len(titles) == 2 and all(" · train #" in t for t in titles)
    assert "# uebench" in build(results) and " #" not in "".join(ln for ln in build(results).splitlines() if ln.startswith("|"))
