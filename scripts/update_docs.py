"""Rewrite the generated blocks of the docs from their single source of truth.

    python scripts/update_docs.py          # rewrite in place
    python scripts/update_docs.py --check  # exit 1 if a block is out of date (tests do this)

A generated block sits between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->`` markers.
Blocks: ``schema`` (the results columns, from `bench.results.ResultRow`), ``findings`` (the
seed papers' findings F1-F8 checked on the published ``results/repro_cpu.csv``) and
``findings-subset1`` (the same checks on ``results/repro_cpu_subset1.csv``, the same
experiments on another draw of the data), ``gg-table2`` (Going Grayscale Table 2 whole,
beside both draws' rows), and for the coverage matrix ``coverage-table`` (its cells on both
draws beside the field's tables) and ``orderings`` / ``orderings-subset1`` (the field's
orderings, `bench.orderings`, checked on each draw).
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REPRODUCTION = REPO / "docs" / "REPRODUCTION.md"


def blocks() -> dict[str, tuple[Path, str]]:
    sys.path.insert(0, str(REPO))
    from bench import findings, lab, orderings, paper_tables
    from bench.results import schema_markdown

    draws = [("subset 0", frame(REPO / "results" / "repro_cpu.csv")), ("subset 1", frame(REPO / "results" / "repro_cpu_subset1.csv"))]
    # the coverage matrix's cells wherever they are recorded (some are repro_cpu's, same hash)
    every = lab.load(REPO / "results")
    coverage = [(t, every[every["cell_hash"].isin(lab.cell_keys(REPO / "configs" / f"{c}.yaml"))])
                for t, c in (("subset 0", "coverage_cpu"), ("subset 1", "coverage_cpu_subset1"))]
    return {
        "schema": (REPO / "docs" / "results-schema.md", schema_markdown()),
        "findings": (REPRODUCTION, findings.markdown(findings.evaluate(draws[0][1]))),
        "findings-subset1": (REPRODUCTION, findings.markdown(findings.evaluate(draws[1][1]))),
        "gg-table2": (REPRODUCTION, paper_tables.markdown(paper_tables.GG_TABLE2, paper_tables.GG_TABLE2_COLUMNS, draws)),
        "coverage-table": (REPRODUCTION, paper_tables.draws_markdown(paper_tables.COVERAGE_TABLE, paper_tables.COVERAGE_COLUMNS, coverage)),
        "orderings": (REPRODUCTION, findings.markdown(orderings.evaluate(coverage[0][1]), "ordering")),
        "orderings-subset1": (REPRODUCTION, findings.markdown(orderings.evaluate(coverage[1][1]), "ordering")),
    }


def frame(path: Path):
    """The rows at ``path`` as a DataFrame (empty, with every column, when there are none)."""
    import pandas as pd

    from bench.results import ResultRow, read_rows

    rows = read_rows(path) if path.exists() else []
    return pd.DataFrame([r.model_dump() for r in rows], columns=list(ResultRow.model_fields))


def render(text: str, name: str, body: str) -> str:
    pat = re.compile(rf"(<!-- {name}:start -->\n)(?:.*?\n)?(<!-- {name}:end -->)", re.S)
    if not pat.search(text):
        raise SystemExit(f"no <!-- {name}:start --> ... <!-- {name}:end --> block")
    return pat.sub(lambda m: m.group(1) + body.rstrip("\n") + "\n" + m.group(2), text)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true")
    a = ap.parse_args(argv)
    stale = []
    for name, (path, body) in blocks().items():
        old = path.read_text()
        new = render(old, name, body)
        if new != old:
            stale.append(str(path.relative_to(REPO)))
            if not a.check:
                path.write_text(new)
    if a.check and stale:
        print(f"out of date: {', '.join(stale)}; run python scripts/update_docs.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
