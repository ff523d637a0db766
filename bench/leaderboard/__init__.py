"""``leaderboard.md``, ``leaderboard.csv`` and the figures, derived from results/*.csv only.

Never edited by hand: CI rebuilds them and fails on any difference. One section per dataset ×
training budget × exploiter arch (`sections`); the text is deterministic (`render`), so the
same rows give the same bytes in any order and in any number of files.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.leaderboard.data import Results, load
from bench.leaderboard.render import markdown, tidy_csv
from bench.leaderboard.sections import Section, sections

FIGURES_DIR = "leaderboard"
"""Where the figures go, beside ``leaderboard.md``."""


@dataclass
class Leaderboard:
    results: Results
    sections: list[Section]
    markdown: str
    csv: str


def build(results_dir: Path, out_dir: Path | None = None, figures: bool = False) -> Leaderboard:
    """The leaderboard of ``results_dir``; with ``figures``, the PNGs are drawn into
    ``out_dir/leaderboard/`` and linked."""
    res = load(results_dir)
    secs = sections(res.ok) if not res.ok.empty else []
    links: dict = {}
    if figures and secs:
        from bench.leaderboard.plots import draw

        links = draw(secs, res.ok, Path(results_dir), Path(out_dir or results_dir) / FIGURES_DIR, f"{FIGURES_DIR}/")
    return Leaderboard(res, secs, markdown(res, secs, links), tidy_csv(secs))


def write(results_dir: Path, output: Path, figures: bool = True) -> Leaderboard:
    """Write ``output`` (markdown), the ``.csv`` beside it and the figures; return the board."""
    from bench.atomic import atomic_write

    output = Path(output)
    board = build(results_dir, output.parent, figures)
    atomic_write(output, board.markdown)
    atomic_write(output.with_suffix(".csv"), board.csv)
    return board


__all__ = ["Leaderboard", "build", "write"]
