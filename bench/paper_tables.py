"""A seed paper's whole table beside the rows that measure it.

The findings (``bench.findings``) check the statements the papers make; a table says more
than its statements, so where a config runs every row of a paper's table, the table is set
out whole: the paper's numbers, then ours on each draw of the data (mean ± std, n runs).
``docs/REPRODUCTION.md``'s copy is generated from the published rows
(``python scripts/update_docs.py``).
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from bench.findings import GRAY, STANDARD, Cells


@dataclass(frozen=True)
class PaperRow:
    name: str  # the paper's name for the row
    label: str  # the attack label the config gives it
    paper: tuple[str, ...]  # the paper's numbers, one per column


GG_TABLE2_COLUMNS = (STANDARD, GRAY)
GG_TABLE2 = [
    PaperRow("Clean", "none", ("94.58", "93.04")),
    PaperRow("ULEOs", "em-sample", ("24.47 ± 4.41", "90.06 ± 3.51")),
    PaperRow("ULEO-Augs", "uleo-augs", ("23.42 ± 7.48", "91.47 ± 1.85")),
    PaperRow("ULEO-Grays", "uleo-gray", ("43.34 ± 11.49", "44.67 ± 10.47")),
    PaperRow("ULEO-GrayAugs", "uleo-grayaugs", ("25.98 ± 7.38", "24.98 ± 5.84")),
]
"""Going Grayscale Table 2: clean test accuracy (%) of the standard and the grayscale
exploiter on sample-wise ULEs, ResNet-18 on CIFAR-10, mean ± std over 5 runs."""


def _cell(cells: Cells, attack: str, defense: str) -> str:
    got = cells.get(attack, defense)
    if got is None:
        return "—"
    mean, std, n = got
    return f"{mean:.1f} ± {std:.1f} ({n})" if n > 1 else f"{mean:.1f} ({n})"


def markdown(rows: list[PaperRow], columns: tuple[str, ...], draws: list[tuple[str, pd.DataFrame]]) -> str:
    """The table: one line per paper row, the paper's columns, then each draw's columns
    (mean ± std over seeds with the run count in brackets; "—" where no row was run)."""
    cells = [(title, Cells(df)) for title, df in draws]
    head = ["row", "label", *(f"paper: {c}" for c in columns), *(f"{t}: {c}" for t, _ in cells for c in columns)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        ours = [_cell(c, r.label, col) for _, c in cells for col in columns]
        lines.append("| " + " | ".join([r.name, f"`{r.label}`", *r.paper, *ours]) + " |")
    return "\n".join(lines)


COVERAGE_COLUMNS = (STANDARD, "iss-gray", "iss-jpeg", "bdr-2", "st-full", "at", "ueraser")
COVERAGE_TABLE = [
    PaperRow("clean", "none", ("94.68", "92.41", "85.38", "—", "93.79", "—", "—")),
    PaperRow("random noise", "random-sample", ("—",) * 7),
    PaperRow("EM", "em-sample", ("20.78", "92.03", "80.72", "37.94", "87.05", "82.51", "93.61")),
    PaperRow("REM", "rem", ("17.47", "92.27", "85.44", "58.60", "78.86", "77.46", "92.43")),
    PaperRow("TAP", "tap", ("6.27", "11.01", "84.08", "70.75", "85.08", "79.92", "79.05")),
    PaperRow("HYPO", "hypo", ("70.38", "63.35", "85.21", "74.82", "—", "81.49", "88.44")),
    PaperRow("AR", "ar", ("11.74", "35.17", "84.75", "36.14", "87.51", "81.15", "90.12")),
    PaperRow("CUDA", "cuda", ("18.48", "—", "—", "—", "—", "—", "—")),
    PaperRow("LSP", "lsp", ("13.06", "64.70", "80.14", "53.86", "—", "81.38", "92.83")),
    PaperRow("OPS", "ops", ("14.69", "19.88", "78.48", "37.32", "76.19", "14.95", "77.99")),
]
"""The coverage matrix's rows in the field's tables, CIFAR-10 ResNet-18, clean test accuracy
(%): APBench's leaderboard (standard, grayscale, JPEG-10, BDR-2, PGD-10 AT at 8/255,
UEraser-Max); the clean row from ISS (standard, grayscale, JPEG-10); ST-Full from ST's
Table II (its EM, REM, AEP = TAP, AP = AR and OPS rows, and its clean row); CUDA's standard
number from the CUDA paper's Table 2 (its AT is 4/255, not APBench's 8/255, so not set here)."""


def _mean(cells: Cells, attack: str, defense: str) -> str:
    m = cells.mean(attack, defense)
    return "—" if m is None else f"{m:.1f}"


def draws_markdown(rows: list[PaperRow], columns: tuple[str, ...], draws: list[tuple[str, pd.DataFrame]]) -> str:
    """The table with one column per defense, each cell the draws' numbers side by side
    ("63.8 / 61.8": the first draw, then the second; "—" where a draw has no row), and the
    paper's numbers last, one column, in the same defense order."""
    cells = [Cells(df) for _, df in draws]
    titles = " / ".join(t for t, _ in draws)
    head = ["attack", *(f"`{c}`" for c in columns), "paper: " + " / ".join(columns)]
    lines = [f"Clean test accuracy (%), one cell per draw ({titles}):", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        ours = [" / ".join(_mean(c, r.label, col) for c in cells) for col in columns]
        lines.append("| " + " | ".join([f"{r.name} (`{r.label}`)", *ours, " / ".join(r.paper)]) + " |")
    return "\n".join(lines)
