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


def write_leaderboard(results_dir: Path, output: Path | None = None, echo: bool = False) -> None:
    from bench.leaderboard import write

    output = output or leaderboard_path(results_dir)
    text = write(results_dir, output)
    if echo:
        click.echo(text)
    click.echo(f"leaderboard written to {output}", err=True)


@main.command("leaderboard")
@click.option("--results-dir", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_RESULTS_DIR, show_default=True)
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Default: leaderboard.md (or <results-dir>/leaderboard.md for a scratch dir).")
@click.option("--print/--no-print", "echo", default=False, help="Also print it.")
def leaderboard_cmd(results_dir: Path, output: Path | None, echo: bool) -> None:
    """Rebuild the leaderboard from RESULTS_DIR/*.csv."""
    if not Path(results_dir).is_dir():
        fail(f"--results-dir: {results_dir} is not a folder; run `uebench run CONFIG` first")
    write_leaderboard(results_dir, output, echo)
