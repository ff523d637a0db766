"""``uebench run`` and ``uebench prune``: run a matrix (resumably), drop the rows it no longer has."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from bench.cli.app import fail, main, progress_bar

SCRATCH_DIR = Path("runs")
"""Where a run writes without ``--results-dir``: ``runs/<matrix>/`` (git-ignored)."""

_PATH = click.Path(file_okay=False, path_type=Path)


def scratch_dir(matrix: str) -> Path:
    return SCRATCH_DIR / matrix


def parse_only(pairs: tuple[str, ...]) -> dict[str, list[str]] | None:
    """``--only attack=em-sample --only seed=0`` → {"attack": ["em-sample"], "seed": ["0"]}."""
    from bench.status import FILTER_KEYS

    if not pairs:
        return None
    out: dict[str, list[str]] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key not in FILTER_KEYS or not value:
            raise click.BadParameter(f"expected KEY=PATTERN with KEY one of {', '.join(FILTER_KEYS)}; got {pair!r}", param_hint="--only")
        out.setdefault(key, []).append(value)
    return out


def _load(config: Path, device: str | None, sets: tuple[str, ...]):
    from bench.configfile import load_matrix

    return load_matrix(config, {"device": device}, sets)


@main.command()
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--results-dir", type=_PATH, default=None, help="Where rows go [default: runs/<matrix>/, a scratch folder]; `--results-dir results` publishes.")
@click.option("--data-root", type=_PATH, default=None, help="Where datasets live (else the config's data_root, $UEBENCH_DATA, ~/.cache/uebench/data).")
@click.option("--device", default=None, help="auto | cpu | cuda | cuda:N | mps (overrides the config).")
@click.option("--cache-dir", type=_PATH, default=None, help="Poison cache (else $UEBENCH_CACHE, else ~/.cache/uebench/cache).")
@click.option("--set", "sets", multiple=True, metavar="FIELD=VALUE", help="Override a config field, e.g. --set train.epochs=2 (repeatable).")
@click.option("--only", "only", multiple=True, metavar="KEY=PATTERN",
              help="Run only matching cells; KEY: attack, attack_name, defense, arch, seed, dataset, block (a block's label; wildcards).")
@click.option("--dry-run", is_flag=True, help="Print the plan (cells done / to compute, poisons cached / to generate) and exit.")
@click.option("--retry-failed", is_flag=True, help="Rerun cells recorded as failed (default: skip and report them).")
@click.option("--regenerate", multiple=True, metavar="ATTACK", help="Remake the cached poisons of ATTACK (name or label, wildcards) and rerun their cells.")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True, help="Where tasks run.")
@click.option("--workers", type=click.IntRange(min=1, max=1024), default=None,
              help="local: worker processes, each pinned to a GPU or cores/N threads [default: 1].")
@click.option("--ray-address", default=None, help="ray: cluster address (default: $RAY_ADDRESS, else a new local instance).")
@click.option("--gpus-per-task", type=click.FloatRange(min=0, max=64), default=None,
              help="ray: GPUs per task; fractions pack small runs (default: 1 with GPUs).")
@click.option("--cpus-per-task", type=click.FloatRange(min=0, min_open=True, max=1024), default=None, help="ray: CPUs per task [default: 1].")
@click.option("--soft-lock", is_flag=True, help="Marker-file locks (cache and cell claims), for shared filesystems where flock does nothing.")
@click.option("--leaderboard/--no-leaderboard", default=True, show_default=True, help="Rebuild and print the leaderboard afterwards.")
def run(config, results_dir, data_root, device, cache_dir, sets, only, dry_run, retry_failed, regenerate, executor,
        workers, ray_address, gpus_per_task, cpus_per_task, soft_lock, leaderboard) -> None:
    """Run every cell of the matrix CONFIG not already in the results.

    Each poison is generated once into the cache; a killed run restarted with the same
    command finishes the rest. Without --results-dir the rows go to runs/<matrix>/ and the
    published results/ and leaderboard.md are never touched.
    """
    from bench.cache import resolve_cache_dir
    from bench.cli.format import format_status, format_summary
    from bench.datasets.common import resolve_data_root
    from bench.device import check_device
    from bench.scheduler import env_for, plan_status, run_matrix

    if executor == "local" and (ray_address or gpus_per_task is not None or cpus_per_task is not None):
        fail("--ray-address/--gpus-per-task/--cpus-per-task: only with --executor ray")
    if executor == "ray" and workers is not None:
        fail("--workers: only with --executor local (Ray places tasks by --cpus-per-task / --gpus-per-task)")
    m = _load(config, device, sets)
    filters = parse_only(only)
    check_device(device or m.device, "--device" if device else "device")
    results_dir = Path(results_dir) if results_dir is not None else scratch_dir(m.name)
    root = resolve_data_root(str(data_root) if data_root else m.data_root)
    cache = resolve_cache_dir(cache_dir)
    lock = "soft" if soft_lock else "file"
    if dry_run:
        env = env_for(root, cache, lock, device=device)
        st = plan_status(m, results_dir, env, retry_failed, regenerate, filters)
        click.echo(format_status(st, cache, results_dir))
        _stale_hint(m, config, results_dir)
        return
    if executor == "local":
        params = {"workers": workers or 1}
    else:
        params = {k: v for k, v in {"address": ray_address, "num_gpus": gpus_per_task, "num_cpus": cpus_per_task}.items() if v is not None}
    summary = run_matrix(
        m, results_dir, root, device, progress=progress_bar, cache_dir=cache, lock=lock, retry_failed=retry_failed,
        regenerate=regenerate, only=filters, executor=executor, executor_params=params,
    )
    click.echo(format_summary(summary), err=True)
    click.echo(
        f"{summary.total} cells: {summary.ok} run, {summary.skipped} already done, {summary.failed} failed, "
        f"{summary.poisons_generated} poisons generated -> {summary.results_path}",
        err=True,
    )
    for note in summary.notes:
        click.echo(f"note: {note}", err=True)
    for row in summary.rows + summary.skipped_failed:
        if row.status == "failed":
            click.echo(f"  failed: {row.attack} / {row.defense} / {row.arch} / seed {row.seed}: {row.error}", err=True)
    if summary.skipped_failed:
        click.echo(f"{len(summary.skipped_failed)} cells failed in an earlier run; rerun them with --retry-failed", err=True)
    _stale_hint(m, config, results_dir)
    if leaderboard:
        from bench.cli.results import write_leaderboard

        write_leaderboard(results_dir, echo=True)
    if summary.failed or summary.skipped_failed:
        sys.exit(1)


def _stale_hint(m, config: Path, results_dir: Path) -> None:
    from bench.plan import plan
    from bench.status import stale_rows
    from bench.store import ResultStore

    if stale := stale_rows(plan(m), ResultStore(results_dir, m.name)):
        click.echo(
            f"{len(stale)} rows in {Path(results_dir) / (m.name + '.csv')} are from cells this matrix no longer has "
            f"(its config or a plugin's version changed); `uebench prune {config} --results-dir {results_dir}` removes them",
            err=True,
        )


@main.command()
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--results-dir", type=_PATH, default=None, help="[default: runs/<matrix>/]")
@click.option("--dry-run", is_flag=True, help="List the rows that would be removed, remove nothing.")
def prune(config: Path, results_dir: Path | None, dry_run: bool) -> None:
    """Remove the result rows (and curves) of cells the matrix CONFIG no longer has.

    After a config is edited (or a plugin bumps its version), the results file still holds the
    rows of the old cells; the leaderboard shows them apart, but they are another
    experiment's and should not be published under this matrix.
    """
    from bench.plan import plan
    from bench.status import prune as prune_rows
    from bench.status import stale_rows
    from bench.store import ResultStore

    m = _load(config, None, ())
    results_dir = Path(results_dir) if results_dir is not None else scratch_dir(m.name)
    store = ResultStore(results_dir, m.name)
    rows = stale_rows(plan(m), store) if dry_run else prune_rows(plan(m), store)
    for r in rows:
        click.echo(f"{'would remove' if dry_run else 'removed'}: {r.attack} / {r.defense} / {r.arch} / seed {r.seed} ({r.cell_hash})")
    click.echo(f"{len(rows)} stale rows {'found' if dry_run else 'removed'} in {store.path}", err=True)
