"""The findings checks hold on a table where the papers' orderings hold, and fail, each of
them, when a doctored table breaks its ordering."""
from __future__ import annotations

import pandas as pd
import pytest

from bench.findings import FINDINGS, evaluate

# a table shaped like the papers' (two seeds per cell)
GOOD = {
    ("none", "standard", "convnet_cifar", 1.0): (70, 71), ("none", "grayscale", "convnet_cifar", 1.0): (68, 69),
    ("random-sample", "standard", "convnet_cifar", 1.0): (69, 70), ("random-class", "standard", "convnet_cifar", 1.0): (68, 68),
    ("em-sample", "standard", "convnet_cifar", 1.0): (20, 22), ("em-sample", "grayscale", "convnet_cifar", 1.0): (60, 62),
    ("em-class", "standard", "convnet_cifar", 1.0): (15, 17), ("em-class", "grayscale", "convnet_cifar", 1.0): (64, 66),
    ("uleo-grayaugs", "standard", "convnet_cifar", 1.0): (25, 27), ("uleo-grayaugs", "grayscale", "convnet_cifar", 1.0): (26, 28),
    ("uleo-gray-class", "grayscale", "convnet_cifar", 1.0): (30, 31),
    ("em-mlp", "standard", "convnet_cifar", 1.0): (30, 32), ("none", "standard", "mlp_gg", 1.0): (40, 41), ("em-mlp", "standard", "mlp_gg", 1.0): (38, 39),
    ("em-sample", "bdr-2", "convnet_cifar", 1.0): (35, 37), ("em-sample", "jpeg", "convnet_cifar", 1.0): (50, 52),
    ("none", "at", "convnet_cifar", 1.0): (55, 56), ("em-sample", "at", "convnet_cifar", 1.0): (53, 54),
    ("em-sample", "st", "convnet_cifar", 1.0): (40, 42), ("em-sample", "st-cg", "convnet_cifar", 1.0): (50, 52),
    ("em-sample", "st-full", "convnet_cifar", 1.0): (60, 62), ("none", "st-full", "convnet_cifar", 1.0): (69, 70),
    ("em-sample", "standard", "convnet_cifar", 0.2): (69, 70), ("clean-only", "standard", "convnet_cifar", 0.2): (68, 70),
    ("em-sample", "standard", "convnet_cifar", 0.5): (66, 67), ("clean-only", "standard", "convnet_cifar", 0.5): (65, 66),
}


def frame(table: dict) -> pd.DataFrame:
    rows = [{"status": "ok", "attack": a, "defense": d, "arch": arch, "poison_ratio": r, "clean_acc_final": float(v), "seed": s}
            for (a, d, arch, r), vals in table.items() for s, v in enumerate(vals)]
    return pd.DataFrame(rows)


def test_every_finding_holds_on_a_table_with_the_papers_orderings():
    results = evaluate(frame(GOOD))
    assert [f.key for f, _ in results] == [f"F{i}" for i in range(1, 9)] == [f.key for f in FINDINGS]
    assert all(o.holds for _, o in results), [(f.key, o.measured) for f, o in results if not o.holds]


@pytest.mark.parametrize(
    "key,cell,values",
    [
        ("F1", ("random-class", "standard", "convnet_cifar", 1.0), (40, 42)),  # random noise becomes a shortcut
        ("F1", ("em-class", "standard", "convnet_cifar", 1.0), (45, 46)),  # class-wise EM takes too little
        ("F2", ("em-sample", "grayscale", "convnet_cifar", 1.0), (35, 36)),  # grayscale recovers only a third
        ("F3", ("uleo-grayaugs", "grayscale", "convnet_cifar", 1.0), (60, 61)),  # grayscale breaks GrayAugs
        ("F4", ("em-mlp", "standard", "mlp_gg", 1.0), (0, 0)),  # the MLP falls further than the CNN
        ("F5", ("em-sample", "jpeg", "convnet_cifar", 1.0), (21, 22)),  # JPEG recovers nothing
        ("F6", ("em-sample", "at", "convnet_cifar", 1.0), (40, 41)),  # AT does not undo EM
        ("F7", ("em-sample", "st", "convnet_cifar", 1.0), (65, 66)),  # ST above ST-Full
        ("F7", ("none", "st-full", "convnet_cifar", 1.0), (60, 61)),  # ST-Full costs clean data 10 points
        ("F8", ("em-sample", "standard", "convnet_cifar", 0.5), (55, 56)),  # the poisoned half hurts
    ],
)
def test_a_doctored_table_breaks_exactly_its_finding(key, cell, values):
    results = dict((f.key, o) for f, o in evaluate(frame({**GOOD, cell: values})))
    assert results[key].holds is False
    assert all(o.holds for k, o in results.items() if k != key)


def test_missing_rows_are_not_run_not_failed():
    table = {k: v for k, v in GOOD.items() if k[1] != "at"}
    results = dict((f.key, o) for f, o in evaluate(frame(table)))
    assert results["F6"].holds is None and "missing rows" in results["F6"].measured


@pytest.mark.parametrize("matrix", ["repro_cpu", "repro_cpu_subset1"])
def test_published_staged_rows_record_their_calibration(matrix):
    """F7's rows are only comparable to the paper's when τ and β were chosen the paper's way;
    every published ST-family row of the reproduction says how they were (its `calibration`)."""
    import json

    from conftest import REPO

    path = REPO / "results" / f"{matrix}.csv"
    rows = pd.read_csv(path)
    staged = rows[rows.defense.isin(["st", "st-cg", "st-full"])]
    assert len(staged) >= 6
    for spec in staged.defense_params:
        (layer,) = [d for d in json.loads(spec) if d["name"] in ("st", "st-cg", "st-full")]
        assert layer["params"]["calibration"].strip(), layer


def test_a_paper_table_sets_each_draw_beside_the_papers_numbers():
    """Going Grayscale Table 2 whole: the paper's two columns, then each draw's mean ± std (n);
    a row a draw did not run reads "—", a single run shows no spread."""
    from bench.paper_tables import GG_TABLE2, GG_TABLE2_COLUMNS, markdown

    first = frame({k: v for k, v in GOOD.items() if k[0] != "uleo-grayaugs"})
    second = frame({("none", "standard", "convnet_cifar", 1.0): (60,), ("none", "grayscale", "convnet_cifar", 1.0): (58,)})
    lines = markdown(GG_TABLE2, GG_TABLE2_COLUMNS, [("subset 0", first), ("subset 1", second)]).splitlines()
    assert lines[0].startswith("| row | label | paper: standard | paper: grayscale | subset 0: standard")
    body = {ln.split(" | ")[1].strip("`"): ln.strip("| ").split(" | ") for ln in lines[2:]}
    assert list(body) == ["none", "em-sample", "uleo-augs", "uleo-gray", "uleo-grayaugs"]
    assert body["none"][2:] == ["94.58", "93.04", "70.5 ± 0.7 (2)", "68.5 ± 0.7 (2)", "60.0 (1)", "58.0 (1)"]
    assert body["em-sample"][4:6] == ["21.0 ± 1.4 (2)", "61.0 ± 1.4 (2)"] and body["em-sample"][6:] == ["—", "—"]
    assert body["uleo-grayaugs"][4:] == ["—"] * 4
