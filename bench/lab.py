"""uebench from Python (a notebook): run a matrix and get its rows as a DataFrame, load a
results folder, build the leaderboard from a DataFrame.

    import bench.lab as lab
    df = lab.run("configs/quick.yaml", sets=["train.epochs=2"])       # rows of this run's cells
    df = lab.load("results")                                          # every published row
    df = lab.load("results", cells_of="configs/coverage_cpu.yaml")    # one matrix's cells
    df[df.defense == "standard"].groupby("attack").clean_acc_final.mean()
    print(lab.leaderboard(df[df.dataset == "cifar10"]))               # markdown

``run`` is ``uebench run`` (same cache, resume and scratch folder by default); rows are the
`bench.results.ResultRow` columns.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from bench.results import ResultRow


def _frame(rows: list[ResultRow]) -> pd.DataFrame:
    return pd.DataFrame([r.model_dump() for r in rows], columns=ResultRow.columns())


def load(results_dir: str | Path = "results", cells_of: str | Path | None = None) -> pd.DataFrame:
    """Every row (ok and failed) of a results folder's files; a cell recorded twice counts once.
    With ``cells_of`` (a matrix config), only the rows of that matrix's cells, in whichever
    file they were recorded (two configs that name the same cell share its one row)."""
    from bench.results import NotAResultsFile, read_rows, results_files

    keys = None if cells_of is None else cell_keys(cells_of)
    rows: dict[str, ResultRow] = {}
    for path in results_files(Path(results_dir)):
        try:
            for r in read_rows(path):
                if keys is None or r.cell_hash in keys:
                    rows[r.cell_hash] = r
        except NotAResultsFile:
            continue
    return _frame(list(rows.values()))


def cell_keys(config: str | Path) -> set[str]:
    """The cell hashes of a matrix config: what selects its rows from any results file."""
    from bench.configfile import load_matrix
    from bench.plan import plan

    return plan(load_matrix(config)).keys()


def run(config: str | Path | dict, results_dir: str | Path | None = None, *, data_root: str | Path | None = None,
        cache_dir: str | Path | None = None, device: str | None = None, sets: list[str] | tuple[str, ...] = (),
        only: dict[str, list[str]] | None = None, **kwargs: Any) -> pd.DataFrame:
    """Run a matrix (a YAML path or a dict of its fields) like ``uebench run``; return the rows
    of its cells (the ones this call trained and those done before)."""
    from bench.config import parse_matrix
    from bench.configfile import apply_overrides, load_matrix
    from bench.datasets.common import resolve_data_root
    from bench.plan import plan
    from bench.scheduler import run_matrix
    from bench.store import ResultStore

    if isinstance(config, dict):
        m = parse_matrix(apply_overrides({"name": "lab", **config}, tuple(sets)), "config")
    else:
        m = load_matrix(config, {"device": device}, tuple(sets))
    results_dir = Path(results_dir) if results_dir is not None else Path("runs") / m.name
    root = resolve_data_root(str(data_root) if data_root else m.data_root)
    run_matrix(m, results_dir, root, device, cache_dir=cache_dir, only=only, **kwargs)
    keys = plan(m).keys()
    return _frame([r for r in ResultStore(results_dir, m.name).rows() if r.cell_hash in keys])


def leaderboard(df: pd.DataFrame) -> str:
    """The leaderboard markdown of a frame of rows (e.g. a filtered `load`)."""
    from bench.leaderboard.data import Results, prepare
    from bench.leaderboard.render import markdown
    from bench.leaderboard.sections import sections

    ok = prepare(df)
    res = Results(ok, files=[], failed=int((df["status"] == "failed").sum()) if "status" in df else 0)
    return markdown(res, sections(ok) if not ok.empty else [], {})
