"""The field's orderings (bench.orderings) hold on the field's own table, each fails when a
doctored table breaks it, and they read the coverage matrix's published cells wherever they
are recorded."""
from __future__ import annotations

import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import REPO

from bench import lab
from bench.cli import main
from bench.findings import Cells
from bench.orderings import ORDERINGS, evaluate, share
from bench.paper_tables import COVERAGE_COLUMNS, COVERAGE_TABLE

NO_CLEAN_ROW = ("bdr-2", "at", "ueraser")
"""APBench reports no clean accuracy for these; the paper frame takes standard training's.
That understates every share a defense removes, so a "breaks" that holds with it holds for
any lower clean number the defense really has."""


def paper_frame() -> pd.DataFrame:
    rows = []
    for r in COVERAGE_TABLE:
        for col, v in zip(COVERAGE_COLUMNS, r.paper):
            if v == "—" and r.label == "none" and col in NO_CLEAN_ROW:
                v = r.paper[0]
            if v != "—":
                rows.append({"attack": r.label, "defense": col, "value": float(v)})
    return frame({(x["attack"], x["defense"]): x["value"] for x in rows})


def frame(table: dict) -> pd.DataFrame:
    return pd.DataFrame([{"status": "ok", "attack": a, "defense": d, "arch": "resnet18", "poison_ratio": 1.0, "clean_acc_final": v,
                          "seed": 0, "cell_hash": f"{a}/{d}"} for (a, d), v in table.items()])


def table(df: pd.DataFrame) -> dict:
    return {(r.attack, r.defense): r.clean_acc_final for r in df.itertuples()}


def test_every_ordering_with_numbers_holds_on_the_fields_own_table():
    results = {f.key: o for f, o in evaluate(paper_frame())}
    assert list(results) == [f.key for f in ORDERINGS] == [f"O{i}" for i in range(1, 13)]
    assert results["O9"].holds is None  # the CUDA paper reports no filtered CUDA numbers
    assert all(o.holds for k, o in results.items() if k != "O9"), {k: o.measured for k, o in results.items() if not o.holds}


@pytest.mark.parametrize(
    "key,cell,value",
    [
        ("O1", ("ops", "standard"), 80.0),  # OPS stops working
        ("O2", ("lsp", "standard"), 75.0),  # LSP becomes weaker than HYPO
        ("O3", ("rem", "iss-jpeg"), 30.0),  # JPEG-10 no longer breaks REM
        ("O4", ("em-sample", "iss-gray"), 40.0),  # grayscale breaks EM only partly
        ("O5", ("tap", "iss-gray"), 85.0),  # grayscale breaks TAP
        ("O6", ("ar", "iss-gray"), 85.0),  # grayscale breaks AR
        ("O7", ("lsp", "iss-gray"), 90.0),  # grayscale breaks LSP fully
        ("O8", ("tap", "bdr-2"), 20.0),  # BDR-2 leaves TAP
        ("O10", ("ops", "st-full"), 30.0),  # ST-Full leaves OPS
        ("O11", ("ops", "at"), 80.0),  # AT breaks OPS too
        ("O12", ("tap", "ueraser"), 10.0),  # UEraser leaves TAP
    ],
)
def test_a_doctored_table_breaks_exactly_its_ordering(key, cell, value):
    results = {f.key: o for f, o in evaluate(frame({**table(paper_frame()), cell: value}))}
    assert results[key].holds is False, results[key].measured
    if cell[1] != "standard":  # a standard-training cell is every share's baseline; any other cell is one ordering's
        assert all(o.holds for k, o in results.items() if k not in (key, "O9"))


def test_share_discounts_the_defenses_own_clean_cost():
    # the defense costs clean data 10 points and costs the poison nothing more: all its damage is removed
    c = Cells(frame({("none", "standard"): 60.0, ("x", "standard"): 20.0, ("none", "d"): 50.0, ("x", "d"): 50.0}))
    assert share(c, "x", "d") == pytest.approx(1.0)
    c = Cells(frame({("none", "standard"): 60.0, ("x", "standard"): 20.0, ("none", "d"): 50.0, ("x", "d"): 30.0}))
    assert share(c, "x", "d") == pytest.approx(0.5)  # damage 40 under standard, 20 under the defense
    c = Cells(frame({("none", "standard"): 60.0, ("x", "standard"): 61.0, ("none", "d"): 50.0, ("x", "d"): 30.0}))
    assert share(c, "x", "d") is None  # no damage to remove


def test_the_coverage_matrixs_cells_are_read_from_every_file_that_records_them():
    """coverage_cpu names cells repro_cpu ran first (the same hash): they count once, from
    whichever file holds them; the cifar10-mini rows in coverage_cpu.csv are another matrix's."""
    keys = lab.cell_keys(REPO / "configs" / "coverage_cpu.yaml")
    df = lab.load(REPO / "results", cells_of=REPO / "configs" / "coverage_cpu.yaml")
    assert len(df) > 0 and set(df.cell_hash) <= keys and df.cell_hash.is_unique
    assert set(df.matrix) == {"coverage_cpu", "repro_cpu"} and set(df.dataset) == {"cifar10"}
    mini = pd.read_csv(REPO / "results" / "coverage_cpu.csv").query("dataset == 'cifar10-mini'")
    assert len(mini) > 0 and not set(mini.cell_hash) & keys


def test_the_findings_command_checks_the_orderings_on_one_matrixs_cells():
    df = lab.load(REPO / "results", cells_of=REPO / "configs" / "coverage_cpu.yaml")
    expected = {f.key: o.holds for f, o in evaluate(df)}
    got = CliRunner().invoke(main, ["findings", str(REPO / "results"), "--orderings", "--cells-of", str(REPO / "configs" / "coverage_cpu.yaml")])
    marks = {line.split()[0]: line.split()[1] for line in got.output.splitlines() if line.startswith("O")}
    assert marks == {k: {True: "holds", False: "FAILS", None: "not"}[v] for k, v in expected.items()}
    assert got.exit_code == (1 if False in expected.values() else 0)
