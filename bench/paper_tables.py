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
