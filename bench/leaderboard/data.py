"""The leaderboard's input: every ok row of a results folder, once, with what sections need.

A cell that several matrices recorded (the same ``cell_hash``) counts once: the newest row
wins. Files that are not results files are skipped and named; a malformed results file stops
the build with one line (`bench.results.ResultsFileError`).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from bench.results import NotAResultsFile, ResultRow, read_rows, results_files

CLEAN_ONLY = "clean-only"
CHANCE_CLASSES = {"cifar10": 10, "cifar10-mini": 10, "cifar100": 100, "svhn": 10}
"""Class counts of the built-in datasets, for rows written before ``num_classes`` was recorded."""


@dataclass
class Results:
    """The rows a leaderboard is built from, and what it says about where they came from."""

    ok: pd.DataFrame
    files: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # one line each: file and why
    failed: int = 0
    duplicates: int = 0  # rows of cells another file (or line) also recorded


def short(text: str, n: int = 6) -> str:
    return hashlib.sha256(str(text).encode()).hexdigest()[:n]


def _json(text: str) -> dict:
    try:
        out = json.loads(text or "{}")
    except ValueError:
        return {}
    return out if isinstance(out, dict) else {}


def _pool(row) -> int:
    """The training set a row's matrix drew from: a clean-only baseline trains on it minus the
    withheld (would-be poisoned) images, and belongs in the same section as its attacks."""
    if row.attack_name != CLEAN_ONLY:
        return int(row.n_train)
    return int(row.n_train) + int(_json(row.attack_stats).get("poison", {}).get("withheld", 0))


def _subset(spec: str) -> int:
    """The row's draw of its dataset (`DatasetSpec.subset_seed`, from its cell spec; 0 when
    the spec does not say): two draws of one size are different data, not more seeds."""
    v = _json(spec).get("poison", {}).get("dataset", {}).get("subset_seed", 0)
    return v if isinstance(v, int) and not isinstance(v, bool) else 0


def _converged(stats: str) -> bool | None:
    v = _json(stats).get("converged")
    return v if isinstance(v, bool) else None


def load(results_dir: Path) -> Results:
    rows: list[ResultRow] = []
    out = Results(pd.DataFrame())
    for path in results_files(results_dir):
        try:
            got = read_rows(path)
        except NotAResultsFile as exc:
            out.skipped.append(str(exc))
            continue
        out.files.append(path.name)
        rows.extend(got)
    newest: dict[str, ResultRow] = {}
    for r in sorted(rows, key=lambda r: (r.timestamp, r.matrix)):
        if r.cell_hash in newest:
            out.duplicates += 1
        newest[r.cell_hash] = r
    out.failed = sum(r.status == "failed" for r in newest.values())
    out.ok = prepare(pd.DataFrame([r.model_dump() for r in newest.values() if r.status == "ok"], columns=ResultRow.columns()))
    return out


def prepare(df: pd.DataFrame) -> pd.DataFrame:
    """The ok rows of a frame of result rows, with the derived columns sections need."""
    df = df[df["status"] == "ok"].copy() if "status" in df else df.copy()
    if df.empty:
        return df
    df = df.astype({"n_train": int, "n_test": int, "epochs": int, "poison_ratio": float})
    df["n_pool"] = [_pool(r) for r in df.itertuples()]
    df["subset"] = df["cell_spec"].map(_subset) if "cell_spec" in df else 0
    df["train"] = df["train_config"].map(short)
    nk = df["num_classes"] if "num_classes" in df else pd.Series([None] * len(df), index=df.index)
    df["classes"] = [int(k) if pd.notna(k) else CHANCE_CLASSES.get(d.split("{")[0], 10) for k, d in zip(nk, df["dataset"])]
    df["converged"] = df["attack_stats"].map(_converged)
    df["dirty"] = df["git_commit"].str.endswith("-dirty")
    return _disambiguate(df)


GROUP = ["dataset", "subset", "n_pool", "n_test", "epochs", "train"]
"""A training budget: one dataset (its draw and size), one training recipe."""


def _disambiguate(df: pd.DataFrame) -> pd.DataFrame:
    """Rows that share a budget, an arch and a label but not their params (a config edited
    between runs, two matrices naming different settings alike) get the params' short hash
    appended to the label, so a cell never averages different attacks or defenses."""
    df = df.copy()
    for label, params in (("attack", "attack_params"), ("defense", "defense_params")):
        variants = df.groupby([*GROUP, "arch", label])[params].transform("nunique")
        clash = variants > 1
        df.loc[clash, label] = df.loc[clash, label] + " #" + df.loc[clash, params].map(short)
    return df
