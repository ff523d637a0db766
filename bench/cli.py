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
        if "cost" in e.meta:
            extra.append(f"cost: {e.meta['cost']}")
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
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None, help="Poison cache (else $UEBENCH_CACHE, else ~/.cache/uebench/cache).")
@click.option("--dry-run", is_flag=True, help="Print the plan (cells done / to compute, poisons cached / to generate) and exit.")
@click.option("--retry-failed", is_flag=True, help="Rerun cells recorded as failed (default: skip and report them).")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True, help="Where tasks run.")
@click.option("--workers", type=click.IntRange(min=1), default=None, help="local: worker processes, each pinned to one GPU or cores/N threads [default: 1, in-process].")
@click.option("--ray-address", default=None, help="ray: cluster address (default: $RAY_ADDRESS, else a new local instance).")
@click.option("--gpus-per-task", type=click.FloatRange(min=0), default=None, help="ray: GPUs per task; fractions pack small runs (default: 1 if the cluster has GPUs).")
@click.option("--cpus-per-task", type=click.FloatRange(min=0, min_open=True), default=None, help="ray: CPUs per task [default: 1].")
@click.option("--soft-lock", is_flag=True, help="Marker-file cache locks, for shared cluster filesystems where flock does nothing.")
@click.option("--leaderboard/--no-leaderboard", default=True, show_default=True, help="Rebuild and print the leaderboard afterwards.")
def run(
    config: Path,
    results_dir: Path,
    data_root: Path | None,
    device: str | None,
    cache_dir: Path | None,
    dry_run: bool,
    retry_failed: bool,
    executor: str,
    workers: int | None,
    ray_address: str | None,
    gpus_per_task: float | None,
    cpus_per_task: float | None,
    soft_lock: bool,
    leaderboard: bool,
) -> None:
    """Run every cell of the matrix CONFIG not already in the results.

    Each poison is generated once into the cache; a killed run restarted with the same
    command finishes the rest.
    """
    from bench.config import ConfigError, load_matrix

    if executor == "local" and (ray_address or gpus_per_task is not None or cpus_per_task is not None):
        _fail("--ray-address/--gpus-per-task/--cpus-per-task: only with --executor ray")
    if executor == "ray" and workers is not None:
        _fail("--workers: only with --executor local (Ray places tasks by --cpus-per-task / --gpus-per-task)")
    try:
        m = load_matrix(config, {"device": device})
    except ConfigError as exc:
        _fail(str(exc))
    from bench.cache import resolve_cache_dir
    from bench.datasets._common import DatasetError, resolve_data_root
    from bench.executors import ExecutorError
    from bench.runner import PreflightError, format_status, format_summary, preflight, run_matrix, status
    from registry import RegistryError

    root = resolve_data_root(str(data_root) if data_root else m.data_root)
    cache = resolve_cache_dir(cache_dir)
    if executor == "local":
        params = {"workers": workers or 1}
    else:
        params = {k: v for k, v in {"address": ray_address, "num_gpus": gpus_per_task, "num_cpus": cpus_per_task}.items() if v is not None}
    try:
        if dry_run:
            preflight(m)
            click.echo(format_status(m, status(m, results_dir, root, cache, retry_failed), cache, retry_failed))
            _stale_hint(m, config, results_dir)
            return
        summary = run_matrix(
            m, results_dir, root, progress=_progress, cache_dir=cache, lock="soft" if soft_lock else "file",
            retry_failed=retry_failed, executor=executor, executor_params=params,
        )
    except (PreflightError, DatasetError, ExecutorError, RegistryError) as exc:
        _fail(str(exc))
    click.echo(format_summary(summary), err=True)
    click.echo(
        f"{summary.total} cells: {summary.ok} run, {summary.skipped} already done, {summary.failed} failed, "
        f"{summary.poisons_generated} poisons generated -> {summary.results_path}",
        err=True,
    )
    for row in summary.rows + summary.skipped_failed:
        if row.status == "failed":
            click.echo(f"  failed: {row.attack} / {row.defense} / {row.arch} / seed {row.seed}: {row.error}", err=True)
    if summary.skipped_failed:
        click.echo(f"{len(summary.skipped_failed)} cells failed in an earlier run; rerun them with --retry-failed", err=True)
    _stale_hint(m, config, results_dir)
    if leaderboard:
        _write_leaderboard(results_dir, None, echo=True)
    if summary.failed or summary.skipped_failed:
        sys.exit(1)


def _stale_hint(m, config: Path, results_dir: Path) -> None:
    from bench.runner import stale_rows

    if stale := stale_rows(m, results_dir):
        click.echo(
            f"{len(stale)} rows in {Path(results_dir) / (m.name + '.csv')} are from cells this matrix no longer has "
            f"(its config or a plugin's version changed); `uebench prune {config}` removes them",
            err=True,
        )


@main.command()
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--results-dir", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_RESULTS_DIR, show_default=True)
@click.option("--dry-run", is_flag=True, help="List the rows that would be removed, remove nothing.")
def prune(config: Path, results_dir: Path, dry_run: bool) -> None:
    """Remove the result rows (and curves) of cells the matrix CONFIG no longer has.

    After a config is edited (or a plugin bumps its version), the results file still holds the
    rows of the old cells; the leaderboard shows them apart, but they are another
    experiment's and should not be published under this matrix.
    """
    from bench.config import ConfigError, load_matrix
    from bench.runner import prune as prune_rows
    from bench.runner import stale_rows

    try:
        m = load_matrix(config, {})
    except ConfigError as exc:
        _fail(str(exc))
    rows = stale_rows(m, results_dir) if dry_run else prune_rows(m, results_dir)
    for r in rows:
        click.echo(f"{'would remove' if dry_run else 'removed'}: {r.attack} / {r.defense} / {r.arch} / seed {r.seed} ({r.cell_hash})")
    click.echo(f"{len(rows)} stale rows {'found' if dry_run else 'removed'} in {Path(results_dir) / (m.name + '.csv')}", err=True)


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


@main.group("cache")
def cache_group() -> None:
    """The poison cache ($UEBENCH_CACHE, default ~/.cache/uebench/cache)."""


@cache_group.command("ls")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None, help="Default: $UEBENCH_CACHE, else ~/.cache/uebench/cache.")
@click.option("--kind", type=click.Choice(["perturbation", "index"]), default=None, help="Only entries of this kind.")
def cache_ls(cache_dir: Path | None, kind: str | None) -> None:
    """List cache entries: kind, key, size, generation time, what made them."""
    from bench.cache import Cache, format_entries, resolve_cache_dir

    cache = Cache(resolve_cache_dir(cache_dir))
    entries = list(cache.entries(kind))
    click.echo(format_entries(entries))
    click.echo(f"{len(entries)} entries, {sum(e['size'] for e in entries) / 2**20:.1f} MiB in {cache.root}", err=True)


@cache_group.command("gc")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None, help="Default: $UEBENCH_CACHE, else ~/.cache/uebench/cache.")
@click.option("--older-than", type=click.FloatRange(min=0), default=None, help="Also remove entries not used for this many days.")
@click.option("--dry-run", is_flag=True, help="Only list what would be removed.")
def cache_gc(cache_dir: Path | None, older_than: float | None, dry_run: bool) -> None:
    """Remove temp files and half entries of killed writers, corrupt entries and (--older-than) unused ones."""
    from bench.cache import Cache, resolve_cache_dir

    cache = Cache(resolve_cache_dir(cache_dir))
    report = cache.gc(older_than, dry_run=dry_run)
    for what, paths in report.items():
        for p in paths:
            click.echo(f"{'would remove' if dry_run else 'removed'} ({what}): {p}")
    click.echo(", ".join(f"{len(v)} {k}" for k, v in report.items()) + f" file(s){' (dry run)' if dry_run else ''}", err=True)


@main.group("show")
def show_group() -> None:
    """Look at things as images."""


@show_group.command("poison")
@click.argument("target", metavar="CONFIG_OR_ATTACK")
@click.option("--param", "-p", "params", multiple=True, help="Attack param as key=value (YAML value), repeatable; with an attack name.")
@click.option("--dataset", default="cifar10-mini", show_default=True, help="Dataset, with an attack name.")
@click.option("--n-train", type=click.IntRange(min=2), default=None, help="Stratified train subset the attack runs on (default: all).")
@click.option("--n", "per_class", type=click.IntRange(min=1), default=4, show_default=True, help="Images per class in the montage.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="PNG path (default: runs/show/<attack>.png).")
@click.option("--data-root", type=click.Path(file_okay=False, path_type=Path), default=None, help="Where datasets live.")
@click.option("--device", default=None, help="auto | cpu | cuda | cuda:N | mps.")
def show_poison_cmd(target: str, params: tuple[str, ...], dataset: str, n_train: int | None, per_class: int, seed: int,
                    out: Path | None, data_root: Path | None, device: str | None) -> None:
    """Write a montage of CONFIG_OR_ATTACK's poison: clean | perturbation ×255/ε | poisoned, per class."""
    from bench.config import ConfigError
    from bench.show import parse_params, show_poison

    try:
        path, stats = show_poison(target, parse_params(params), dataset, n_train, per_class, out, data_root, seed, device)
    except (ConfigError, ValueError) as exc:
        _fail(str(exc))
    click.echo(f"{path}  [{stats['threat']}; measured linf {stats['poison_linf']:g}/255, l2 {stats['poison_l2']:.3f}]")


if __name__ == "__main__":  # pragma: no cover
    main()
