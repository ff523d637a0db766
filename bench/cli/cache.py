"""``uebench cache ls|gc``: look into and repair the content-addressed poison cache."""
from __future__ import annotations

from pathlib import Path

import click

from bench.cli.app import main
from bench.config import canonical_json

_DIR = click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                    help="Default: $UEBENCH_CACHE, else ~/.cache/uebench/cache.")


@main.group("cache")
def cache_group() -> None:
    """The poison cache ($UEBENCH_CACHE, default ~/.cache/uebench/cache)."""


@cache_group.command("ls")
@_DIR
@click.option("--kind", type=click.Choice(["perturbation", "index"]), default=None, help="Only entries of this kind.")
def cache_ls(cache_dir: Path | None, kind: str | None) -> None:
    """List cache entries: kind, key, size, generation time, what made them."""
    from bench.cache import Cache, resolve_cache_dir

    cache = Cache(resolve_cache_dir(cache_dir))
    entries = list(cache.entries(kind))
    click.echo(format_entries(entries))
    click.echo(f"{len(entries)} entries, {sum(e['size'] for e in entries) / 2**20:.1f} MiB in {cache.root}", err=True)


@cache_group.command("gc")
@_DIR
@click.option("--older-than", type=click.FloatRange(min=0), default=None, help="Also remove entries not used for this many days.")
@click.option("--dry-run", is_flag=True, help="Only list what would be removed.")
def cache_gc(cache_dir: Path | None, older_than: float | None, dry_run: bool) -> None:
    """Remove temp files of dead writers, half entries, corrupt or malformed entries and (--older-than) unused ones."""
    from bench.cache import Cache, resolve_cache_dir

    cache = Cache(resolve_cache_dir(cache_dir))
    report = cache.gc(older_than, dry_run=dry_run)
    for what, paths in report.items():
        for p in paths:
            click.echo(f"{'would remove' if dry_run else 'removed'} ({what}): {p}")
    click.echo(", ".join(f"{len(v)} {k}" for k, v in report.items()) + f" file(s){' (dry run)' if dry_run else ''}", err=True)


def format_entries(entries: list[dict]) -> str:
    """``uebench cache ls``: one line per entry."""
    if not entries:
        return "(empty)"
    lines = [f"{'kind':<12}  {'key':<16}  {'size':>9}  {'seconds':>8}  {'created':<25}  what"]
    for m in entries:
        spec = m.get("spec", {})
        if m.get("kind") == "perturbation":
            params = canonical_json(spec.get("params", {}))
            what = f"{spec.get('attack')} {params} seed {spec.get('seed')} data {str(spec.get('dataset'))[:12]}"
        else:
            classes = spec.get("poison_classes") or "all"
            what = f"ratio {spec.get('poison_ratio')} classes {classes} seed {spec.get('seed')} data {str(spec.get('dataset'))[:12]}"
        secs = m.get("seconds")
        lines.append(
            f"{m.get('kind', '?'):<12}  {m.get('key', '')[:16]:<16}  {_size(m.get('size', 0)):>9}  "
            f"{'' if secs is None else f'{secs:.1f}':>8}  {m.get('created', ''):<25}  {what}"
        )
    return "\n".join(lines)


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
