"""leaderboard.md / leaderboard.csv / figures are derived from result rows, deterministically,
and answer the questions a reader asks: worst case, ranking, what a defense costs, at what
scale, with what caveats."""
from __future__ import annotations

import csv
import json
import random
import shutil
from pathlib import Path

from bench.leaderboard import build, write
from bench.results import ResultRow, read_rows, render

BASE = dict(
    status="ok", matrix="hand", dataset="cifar10", attack_params="{}", defense_params='[{"name":"standard","params":{}}]',
    arch="convnet_cifar", source_arch="", poison_ratio=1.0, epochs=15, n_train=5000, n_test=1000, clean_acc_peak=None,
    peak_epoch=14, train_acc_final=90.0, threat="linf=8/255", epsilon=8.0, poison_linf=8.0, poison_l2=1.0, poison_psnr=35.0,
    apply_mode="signed/round", attack_stats="{}", defense_cost=1.0, defense_report="{}", train_config='{"epochs":15}',
    gen_seconds=0.0, train_seconds=10.0, images_per_second=500.0, device="cpu:2t", dataset_fingerprint="0" * 16,
    python_version="3.11", torch_version="2.14.1", timm_version="1.0", uebench_version="0.2.0",
    plugins='{"attack":"builtin","standard":"builtin"}', git_commit="abc", config_hash="0" * 16,
    timestamp="2026-12-01T00:00:00+00:00", num_classes=10,
)


def rows_from(table: dict[tuple[str, str], list[float]]) -> list[ResultRow]:
    out, i = [], 0
    for (attack, defense), accs in table.items():
        for seed, acc in enumerate(accs):
            i += 1
            dp = f'[{{"name":"{defense}","params":{{}}}}]'
            out.append(ResultRow(**{**BASE, "cell_hash": f"{i:016x}", "attack": attack, "attack_name": attack if attack == "none" else "random",
                                    "defense": defense, "defense_params": dp, "seed": seed, "clean_acc_final": acc, "clean_acc_peak": acc + 1,
                                    "plugins": f'{{"attack":"builtin","{defense}":"builtin"}}'}))
    return out


# a hand-checked section: the worst case of an attack is the best any defense recovers
TABLE = {
    ("none", "standard"): [70.0, 72.0], ("none", "grayscale"): [68.0, 68.0], ("none", "at"): [50.0, 52.0],
    ("alpha", "standard"): [20.0, 22.0], ("alpha", "grayscale"): [60.0, 62.0], ("alpha", "at"): [40.0, 40.0],
    ("beta", "standard"): [15.0, 15.0], ("beta", "grayscale"): [18.0, 20.0], ("beta", "at"): [45.0, 47.0],
    ("gamma", "standard"): [10.0, 10.0], ("gamma", "grayscale"): [12.0, 12.0], ("gamma", "at"): [30.0, 30.0],
}


def test_worst_case_and_ranking_on_a_hand_checked_section(tmp_path):
    (tmp_path / "hand.csv").write_text(render(rows_from(TABLE)))
    board = build(tmp_path)
    (s,) = board.sections
    assert s.worst == {"none": (71.0, "standard"), "alpha": (61.0, "grayscale"), "beta": (46.0, "at"), "gamma": (30.0, "at")}
    assert [(r, a, d) for r, a, _, d in s.ranking] == [(1, "gamma", "at"), (2, "beta", "at"), (3, "alpha", "grayscale")]
    assert s.costs["at"]["clean_cost"] == 71.0 - 51.0 and s.costs["grayscale"]["clean_cost"] == 3.0
    md = board.markdown
    assert "| 1 | gamma | 30.0 | at | 3 of 3 |" in md and "ranked on those alone" not in md
    assert s.shared == () and "Ranked on the defenses they all faced" not in md  # every attack faced every defense
    assert "| alpha | 21.0 ± 1.4 (2) | 40.0 ± 0.0 (2) | 61.0 ± 1.4 (2) | 61.0 (grayscale) |" in md
    tidy = list(csv.DictReader(board.csv.splitlines()))
    beta_at = next(r for r in tidy if (r["attack"], r["defense"]) == ("beta", "at"))
    assert (beta_at["final_mean"], beta_at["worst_case"], beta_at["worst_case_defense"], beta_at["rank"]) == ("46.0000", "46.0000", "at", "2")
    assert beta_at["defenses_run"] == "3"


def test_the_ranking_says_over_how_many_defenses_each_worst_case_was_taken(tmp_path):
    """Two matrices joined in one section: an attack never run against the defense that breaks
    the others ranks strongest, and the ranking says it faced fewer defenses."""
    partial = {k: v for k, v in TABLE.items() if k != ("gamma", "at")}
    (tmp_path / "hand.csv").write_text(render(rows_from(partial)))
    board = build(tmp_path)
    (s,) = board.sections
    assert s.faced == {"none": 3, "alpha": 3, "beta": 3, "gamma": 2}
    assert s.worst["gamma"] == (12.0, "grayscale") and s.ranking[0][1] == "gamma"
    assert "| 1 | gamma | 12.0 | grayscale | 2 of 3 |" in board.markdown and "| 2 | beta | 46.0 | at | 3 of 3 |" in board.markdown
    assert "ranked on those alone" in board.markdown
    tidy = {(r["attack"], r["defense"]): r for r in csv.DictReader(board.csv.splitlines())}
    assert tidy[("gamma", "standard")]["defenses_run"] == "2" and tidy[("alpha", "at")]["defenses_run"] == "3"
    # the fair ranking: over the two defenses all three faced (6 cells; the three defenses alpha and beta faced also give 6,
    # with fewer attacks), where beta's worst case is grayscale's 19.0, not AT's 46.0
    assert s.shared == ("standard", "grayscale")
    assert [(r, a, acc, d) for r, a, acc, d in s.shared_ranking] == [(1, "gamma", 12.0, "grayscale"), (2, "beta", 19.0, "grayscale"),
                                                                     (3, "alpha", 61.0, "grayscale")]
    assert "**Ranked on the defenses they all faced** (standard, grayscale)" in board.markdown and "| 2 | beta | 19.0 | grayscale |" in board.markdown
    assert (tidy[("beta", "at")]["shared_rank"], tidy[("beta", "at")]["shared_worst_case"]) == ("2", "19.0000")


def test_the_scale_banner_and_the_warnings(tmp_path):
    weak = {("none", "standard"): [12.0, 13.0], ("alpha", "standard"): [10.0, 10.0]}
    rows = rows_from(weak)
    rows[-1] = rows[-1].model_copy(update={"attack_stats": '{"converged":false}', "git_commit": "abc-dirty"})
    (tmp_path / "w.csv").write_text(render(rows))
    md = build(tmp_path).markdown
    assert "5,000 train / 1,000 test images, 15 epochs" in md and "Reduced scale (10% of the 50,000 training images" in md
    assert "⚠ the clean reference (12.5 %) is near chance (10 %)" in md
    assert "⚠ poisons that stopped before their stop criterion: alpha (seed 1)" in md
    assert "⚠ 1 runs come from a modified checkout" in md


def test_leaderboard_is_byte_identical_for_the_same_rows_in_any_order(tiny_run, tmp_path):
    _, results, _, _ = tiny_run
    first = build(results)
    assert build(results).markdown == first.markdown and build(results).csv == first.csv
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
    other = build(shuffled)
    assert other.csv == first.csv
    assert other.markdown.replace("[a.csv](results/a.csv), [b.csv](results/b.csv)", "[tiny.csv](results/tiny.csv)") == first.markdown


def test_a_run_recorded_by_two_matrices_counts_once(tiny_run, tmp_path):
    _, results, _, _ = tiny_run
    d = tmp_path / "r"
    shutil.copytree(results, d)
    shutil.copy(d / "tiny.csv", d / "again.csv")
    board = build(d)
    assert "(2)" in board.markdown and "(4)" not in board.markdown and "4 duplicate records counted once" in board.markdown


def test_cells_are_mean_and_std_over_seeds_with_clean_row_first(tiny_run):
    _, results, _, _ = tiny_run
    rows = [r for r in read_rows(results / "tiny.csv") if r.attack == "none"]
    accs = sorted(r.clean_acc_final for r in rows)
    mean = sum(accs) / 2
    std = abs(accs[1] - accs[0]) / 2**0.5
    text = build(results).markdown
    assert f"{mean:.1f} ± {std:.1f} (2)" in text
    table = text.split("**Final clean test accuracy (%)**")[1]
    body = [ln for ln in table.splitlines() if ln.startswith("|")][2:]
    assert body[0].split("|")[1].strip() == "none"
    assert body[1].split("|")[1].strip() == "random[mode=class]"


def test_failed_rows_are_counted_not_shown(tiny_run, tmp_path):
    _, results, _, _ = tiny_run
    d = tmp_path / "r"
    shutil.copytree(results, d)
    rows = read_rows(d / "tiny.csv")
    bad = rows[0].model_copy(update={"status": "failed", "cell_hash": "f" * 16, "attack": "broken", "clean_acc_final": None,
                                     "clean_acc_peak": None, "error": "boom"})
    (d / "tiny.csv").write_text(render([*rows, bad]))
    text = build(d).markdown
    assert "1 failed runs not shown" in text and "broken" not in text


def test_empty_results_give_a_hint(tmp_path):
    assert "No results yet" in build(tmp_path).markdown


def test_rows_with_other_params_or_training_settings_are_never_pooled(tiny_run, tmp_path):
    """A config edited between runs leaves rows under the same label with other params: the
    leaderboard shows them apart instead of averaging different experiments."""
    _, results, _, _ = tiny_run
    d = tmp_path / "r"
    shutil.copytree(results, d)
    rows = read_rows(d / "tiny.csv")
    first = rows[0]
    other_attack = first.model_copy(update={"cell_hash": "a" * 16, "attack_params": first.attack_params.replace("}", ',"x":1}')})
    other_train = first.model_copy(update={"cell_hash": "b" * 16, "train_config": first.train_config.replace("}", ',"x":1}')})
    (d / "tiny.csv").write_text(render([*rows, other_attack, other_train]))
    text = build(d).markdown
    final = text.split("**Final clean test accuracy (%)**")[1].split("**")[0]
    assert final.count(f"| {first.attack} #") == 2  # two variants side by side, never averaged
    titles = [ln for ln in text.splitlines() if ln.startswith("## ") and "Where" not in ln]
    assert len(titles) == 2 and all(" · train #" in t for t in titles)
    assert " #" not in "".join(ln for ln in build(results).markdown.splitlines() if ln.startswith("|"))


def test_write_makes_the_csv_and_figures_beside_the_markdown(tiny_run, tmp_path):
    _, results, _, _ = tiny_run
    out = tmp_path / "lb" / "leaderboard.md"
    board = write(results, out)
    assert out.read_text() == board.markdown and (out.parent / "leaderboard.csv").read_text() == board.csv
    pngs = sorted(p.name for p in (out.parent / "leaderboard").glob("*.png"))
    (s,) = board.sections
    assert pngs == sorted([f"{s.slug}-heatmap.png", f"{s.slug}-curves.png"])
    for p in pngs:
        assert Path(out.parent / "leaderboard" / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"leaderboard/{p}" in board.markdown
    before = {p: (out.parent / "leaderboard" / p).stat().st_mtime_ns for p in pngs}
    write(results, out)  # unchanged figures are not rewritten
    assert {p: (out.parent / "leaderboard" / p).stat().st_mtime_ns for p in pngs} == before


def test_the_python_api_runs_loads_and_builds(tmp_path):
    from conftest import DATA

    import bench.lab as lab

    cfg = {"datasets": [{"name": "cifar10-mini", "n_train": 200, "n_test": 100}], "attacks": ["none", "random"],
           "archs": ["mlp"], "train": {"epochs": 1, "batch_size": 50}}
    df = lab.run(cfg, tmp_path / "r", data_root=DATA, cache_dir=tmp_path / "c", sets=["seeds=[0, 1]"])
    assert len(df) == 4 and set(df["attack"]) == {"none", "random"} and set(df["seed"]) == {0, 1}
    again = lab.load(tmp_path / "r")
    assert sorted(again["cell_hash"]) == sorted(df["cell_hash"])
    md = lab.leaderboard(again[again["attack"] == "random"])
    assert "| random |" in md and "| none |" not in md and "no clean reference" in md


def test_st_rows_get_an_acm_figure_clean_against_poisoned(tmp_path):
    """Where ST rows exist, the section links a figure of ACM per epoch (clean vs each poison,
    τ marked), drawn from the ACM history each row's report carries; other sections get none."""
    rows = rows_from({("none", "standard"): [70.0], ("none", "st"): [65.0], ("alpha", "standard"): [20.0], ("alpha", "st"): [40.0]})
    for i, r in enumerate(rows):
        if r.defense == "st":
            hist = [{"epoch": e, "acm": (0.5 + 0.03 * e) * (1 if r.attack == "none" else 2)} for e in range(6)]
            rows[i] = r.model_copy(update={"defense_report": json.dumps({"st": {"tau": 1.0, "acm_history": hist}})})
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "st.csv").write_text(render(rows))
    board = write(tmp_path / "r", tmp_path / "out" / "leaderboard.md")
    (s,) = board.sections
    png = tmp_path / "out" / "leaderboard" / f"{s.slug}-st-acm.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"leaderboard/{s.slug}-st-acm.png" in board.markdown

    # the ST rows gone, the next build neither links nor leaves behind their figure
    (tmp_path / "r" / "st.csv").write_text(render([r for r in rows if r.defense != "st"]))
    (tmp_path / "out" / "leaderboard" / "notes.txt").write_text("not a figure")
    board = write(tmp_path / "r", tmp_path / "out" / "leaderboard.md")
    assert "st-acm" not in board.markdown and not list((tmp_path / "out" / "leaderboard").glob("*st-acm*"))
    assert {p.name for p in (tmp_path / "out" / "leaderboard").iterdir()} == {f"{s.slug}-heatmap.png", "notes.txt"}


def test_a_figure_draws_only_the_rows_of_its_own_section(tmp_path):
    """Two budgets alike but for their epochs are two sections; the ST rows of the 20-epoch
    one give it an ACM figure and never reach the 15-epoch section's figures."""
    short_rows = rows_from({("none", "standard"): [70.0], ("alpha", "standard"): [20.0]})
    long_rows = []
    for r in rows_from({("none", "standard"): [72.0], ("none", "st"): [65.0]}):
        update = {"cell_hash": f"f{r.cell_hash[1:]}", "epochs": 20}
        if r.defense == "st":
            hist = [{"epoch": e, "acm": 0.5 + 0.03 * e} for e in range(6)]
            update["defense_report"] = json.dumps({"st": {"tau": 1.0, "acm_history": hist}})
        long_rows.append(r.model_copy(update=update))
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "hand.csv").write_text(render([*short_rows, *long_rows]))
    board = write(tmp_path / "r", tmp_path / "out" / "leaderboard.md")
    short, long = sorted(board.sections, key=lambda s: s.epochs)
    assert (short.epochs, long.epochs) == (15, 20) and short.slug != long.slug
    assert len(short.rows(board.results.ok)) == 2 and len(long.rows(board.results.ok)) == 2
    figures = {p.name for p in (tmp_path / "out" / "leaderboard").glob("*st-acm.png")}
    assert figures == {f"{long.slug}-st-acm.png"}
    assert f"leaderboard/{long.slug}-st-acm.png" in board.markdown and f"{short.slug}-st-acm" not in board.markdown


def test_two_draws_of_the_data_are_two_sections_never_pooled(tmp_path):
    """repro_cpu and repro_cpu_subset1 train on different images of the same size: their rows
    are two experiments, each its own section (and rows of the tidy CSV), not more seeds of one."""
    def drawn(rows, subset):
        spec = json.dumps({"poison": {"dataset": {"name": "cifar10", "n_train": 5000, "subset_seed": subset}}})
        return [r.model_copy(update={"cell_hash": f"{subset:x}{r.cell_hash[1:]}", "cell_spec": spec}) for r in rows]

    (tmp_path / "hand.csv").write_text(render([*drawn(rows_from(TABLE), 0), *drawn(rows_from({("none", "standard"): [40.0, 42.0]}), 1)]))
    board = build(tmp_path)
    first, second = sorted(board.sections, key=lambda s: s.subset)
    assert (first.subset, second.subset) == (0, 1) and first.slug != second.slug
    assert first.grid[("none", "standard")].mean == 71.0 and second.grid[("none", "standard")].mean == 41.0
    titles = [ln for ln in board.markdown.splitlines() if ln.startswith("## ") and "Where" not in ln]
    assert titles == ["## cifar10 · convnet_cifar · 15 epochs", "## cifar10 · convnet_cifar · 15 epochs · subset 1"]
    tidy = [r for r in csv.DictReader(board.csv.splitlines()) if (r["attack"], r["defense"]) == ("none", "standard")]
    assert sorted((r["subset"], r["final_mean"]) for r in tidy) == [("0", "71.0000"), ("1", "41.0000")]
