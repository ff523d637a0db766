"""``uebench leaderboard``: rebuild the leaderboard from a results folder."""
from __future__ import annotations

from pathlib import Path

import click

from bench.cli.app import fail, main
from bench.results import DEFAULT_RESULTS_DIR


def leaderboard_path(results_dir: Path) -> Path:
    """The published results (``--results-dir results``, as written) build ``leaderboard.md``
    beside them; any other folder gets its own ``<dir>/leaderboard.md``."""
    if Path(results_dir) == DEFAULT_RESULTS_DIR:
        return Path("leaderboard.md")
    return Path(results_dir) / "leaderboard.md"


def write_leaderboard(results_dir: Path, output: Path | None = None, echo: bool = False, figures: bool = True) -> None:
    from bench.leaderboard import write

    output = output or leaderboard_path(results_dir)
    board = write(results_dir, output, figures)
    for line in board.results.skipped:
        click.echo(f"warning: skipped {line}", err=True)
    if echo:
        click.echo(board.markdown)
    click.echo(f"leaderboard written to {output} (+ {output.with_suffix('.csv').name}{', figures' if figures else ''})", err=True)


@main.command("leaderboard")
@click.option("--results-dir", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_RESULTS_DIR, show_default=True)
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Default: leaderboard.md (or <results-dir>/leaderboard.md for a scratch dir).")
@click.option("--print/--no-print", "echo", default=False, help="Also print it.")
@click.option("--figures/--no-figures", default=True, show_default=True, help="Also draw the PNG figures (leaderboard/ beside the output).")
def leaderboard_cmd(results_dir: Path, output: Path | None, echo: bool, figures: bool) -> None:
    """Rebuild leaderboard.md, leaderboard.csv and the figures from RESULTS_DIR/*.csv."""
    if not Path(results_dir).is_dir():
        fail(f"--results-dir: {results_dir} is not a folder; run `uebench run CONFIG` first")
    write_leaderboard(results_dir, output, echo, figures)


@main.command("validate")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
def validate_cmd(paths: tuple[Path, ...]) -> None:
    """Check results files or folders: schema, values, provenance, budgets, cell hashes, plugins.

    One line per problem (file:line: what); exit 1 if there is any.
    """
    import sys

    from bench.validate import validate

    problems, n = validate(list(paths))
    for p in problems:
        click.echo(p)
    if problems:
        click.echo(f"{len(problems)} problem(s) in {n} file(s)", err=True)
        sys.exit(1)
    click.echo(f"{n} file(s) valid", err=True)


@main.command("verify")
@click.argument("path", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--cells", type=click.IntRange(min=1, max=10_000), default=2, show_default=True, help="How many ok rows to re-run (drawn with --seed).")
@click.option("--seed", type=click.IntRange(min=0, max=2**32 - 1), default=0, show_default=True)
@click.option("--data-root", type=click.Path(file_okay=False, path_type=Path), default=None, help="Where datasets live.")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Reuse this poison cache [default: a fresh one, so poisons are remade too].")
@click.option("--device", default="cpu", show_default=True, help="cpu: exact on the CPU type the row records; elsewhere and on cuda pass a --tolerance.")
@click.option("--tolerance", type=click.FloatRange(min=0, max=100), default=0.0, show_default=True, help="Largest accepted difference (accuracy points).")
def verify_cmd(path, cells, seed, data_root, cache_dir, device, tolerance) -> None:
    """Re-run CELLS rows of a results file from what each row records and compare the numbers."""
    import sys

    from bench.datasets.common import resolve_data_root
    from bench.device import check_device
    from bench.verify import verify

    check_device(device, "--device")
    checks = verify(path, cells, seed, resolve_data_root(str(data_root) if data_root else None), cache_dir, device, tolerance)
    bad = 0
    for c in checks:
        what = f"{c.row.attack} / {c.row.defense} / {c.row.arch} / seed {c.row.seed} ({c.row.cell_hash})"
        if c.ok:
            click.echo(f"ok        {what}: clean_acc_final {c.row.clean_acc_final} reproduced")
        else:
            bad += 1
            detail = c.error or "; ".join(f"{k}: recorded {a}, re-run {b}" for k, (a, b) in c.differences.items())
            click.echo(f"MISMATCH  {what}: {detail}")
        if c.note:
            click.echo(f"          note: {c.note}")
    click.echo(f"{len(checks) - bad} of {len(checks)} cells reproduced (tolerance {tolerance:g})", err=True)
    if bad:
        sys.exit(1)


@main.command("findings")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--arch", default=None, help="The CNN exploiter the findings are read on [default: the most common arch].")
@click.option("--orderings", is_flag=True, help="Check the field's orderings (O1-O12, bench.orderings) instead of the seed papers' findings.")
@click.option("--cells-of", "cells_of", default=None, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Read only the rows of this matrix config's cells (e.g. configs/coverage_cpu.yaml), in whichever file they are.")
def findings_cmd(paths: tuple[Path, ...], arch: str | None, orderings: bool, cells_of: Path | None) -> None:
    """Evaluate the seed papers' findings (F1-F8), or the field's orderings, on results files or
    folders; exit 1 if one fails."""
    import sys

    import pandas as pd

    from bench import findings
    from bench import orderings as ordering_checks
    from bench.lab import cell_keys, load
    from bench.results import read_rows

    frames = [load(p) if p.is_dir() else pd.DataFrame([r.model_dump() for r in read_rows(p)]) for p in paths]
    df = pd.concat(frames, ignore_index=True).drop_duplicates("cell_hash", keep="last")
    if cells_of is not None:
        df = df[df["cell_hash"].isin(cell_keys(cells_of))]
    results = ordering_checks.evaluate(df) if orderings else findings.evaluate(df, arch)
    for f, o in results:
        mark = {True: "holds   ", False: "FAILS   ", None: "not run "}[o.holds]
        click.echo(f"{f.key} {mark} {f.claim}\n      measured: {o.measured}\n      paper ({f.source}): {f.paper}")
    if any(o.holds is False for _, o in results):
        sys.exit(1)
