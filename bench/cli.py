"""The ``uebench`` command. Imports torch/timm only inside the commands that need them."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from bench.results import DEFAULT_RESULTS_DIR

KINDS = ("attacks", "defenses", "datasets", "models")


def _fail(msg: str, code: int = 2) -> None:
    click.echo(f"error: {msg}", err=True)
    sys.exit(code)


@click.group()
@click.version_option(package_name="uebench")
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
def main(verbose: int) -> None:
    """uebench: benchmark unlearnable examples (attacks × defenses × archs × datasets)."""
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


@main.command("list")
@click.argument("kind", type=click.Choice(KINDS))
@click.argument("pattern", default="*")
def list_cmd(kind: str, pattern: str) -> None:
    """List registered plugins of KIND whose names match PATTERN (wildcards)."""
    if kind == "models":
        from bench.models import list_models

        for name in list_models(pattern):
            click.echo(name)
        return
    import registry

    reg = {"attacks": registry.ATTACKS, "defenses": registry.DEFENSES, "datasets": registry.DATASETS}[kind]
    names = reg.list(pattern)
    width = max((len(n) for n in names), default=0)
    for name in names:
        e = reg.get(name)
        extra = []
        if "threat" in e.meta:
            extra.append(e.meta["threat"].describe())
        if e.source != "builtin":
            extra.append(e.source)
        tail = f"  [{'; '.join(extra)}]" if extra else ""
        click.echo(f"{name:<{width}}  {e.description}{tail}")


def _progress(desc: str, total: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=desc == "cells", disable=None, dynamic_ncols=True, file=sys.stderr)


@main.command()
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--results-dir", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_RESULTS_DIR, show_default=True, help="Where rows go; use a scratch folder for runs you will not publish.")
@click.option("--data-root", type=click.Path(file_okay=False, path_type=Path), default=None, help="Where datasets live (else the config's data_root, else $UEBENCH_DATA, else ~/.cache/uebench/data).")
@click.option("--device", default=None, help="auto | cpu | cuda | cuda:N | mps (overrides the config).")
@click.option("--leaderboard/--no-leaderboard", default=True, show_default=True, help="Rebuild and print the leaderboard afterwards.")
def run(config: Path, results_dir: Path, data_root: Path | None, device: str | None, leaderboard: bool) -> None:
    """Run every cell of the matrix CONFIG not already in the results."""
    from bench.config import ConfigError, load_matrix

    try:
        m = load_matrix(config, {"device": device})
    except ConfigError as exc:
        _fail(str(exc))
    from bench.datasets._common import resolve_data_root
    from bench.runner import PreflightError, run_matrix

    root = resolve_data_root(str(data_root) if data_root else m.data_root)
    try:
        summary = run_matrix(m, results_dir, root, progress=_progress)
    except PreflightError as exc:
        _fail(str(exc))
    click.echo(
        f"{summary.total} cells: {summary.ok} run, {summary.skipped} already done, {summary.failed} failed"
        f" -> {summary.results_path}",
        err=True,
    )
    for row in summary.rows:
        if row.status == "failed":
            click.echo(f"  failed: {row.attack} / {row.defense} / {row.arch} / seed {row.seed}: {row.error}", err=True)
    if leaderboard:
        _write_leaderboard(results_dir, None, echo=True)
    if summary.failed:
        sys.exit(1)


def _write_leaderboard(results_dir: Path, output: Path | None, echo: bool) -> None:
    from bench.leaderboard import write

    if output is None:
        output = Path("leaderboard.md") if Path(results_dir) == DEFAULT_RESULTS_DIR else Path(results_dir) / "leaderboard.md"
    text = write(results_dir, output)
    if echo:
        click.echo(text)
    click.echo(f"leaderboard written to {output}", err=True)


@main.command("leaderboard")
@click.option("--results-dir", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_RESULTS_DIR, show_default=True)
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Default: leaderboard.md (or <results-dir>/leaderboard.md for a scratch dir).")
@click.option("--print/--no-print", "echo", default=False, help="Also print it.")
def leaderboard_cmd(results_dir: Path, output: Path | None, echo: bool) -> None:
    """Rebuild the leaderboard from RESULTS_DIR/*.csv."""
    if not Path(results_dir).is_dir():
        _fail(f"--results-dir: {results_dir} is not a folder; run `uebench run CONFIG` first")
    _write_leaderboard(results_dir, output, echo)


if __name__ == "__main__":  # pragma: no cover
    main()
