"""``uebench show poison``: look at a poison as a montage, and at its stats."""
from __future__ import annotations

from pathlib import Path

import click

from bench.cli.app import fail, main


@main.group("show")
def show_group() -> None:
    """Look at things as images."""


@show_group.command("poison")
@click.argument("target", metavar="CONFIG_OR_ATTACK")
@click.option("--attack", "-a", default=None, help="With a config: the attack label to show [default: the first attack that is not none].")
@click.option("--param", "-p", "params", multiple=True, help="Attack param as key=value (YAML value), repeatable; with an attack name.")
@click.option("--dataset", default="cifar10-mini", show_default=True, help="Dataset, with an attack name.")
@click.option("--n-train", type=click.IntRange(min=2), default=None, help="Stratified train subset the attack runs on (default: all).")
@click.option("--n", "per_class", type=click.IntRange(min=1, max=64), default=4, show_default=True, help="Images per class in the montage.")
@click.option("--seed", type=click.IntRange(min=0, max=2**32 - 1), default=0, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="PNG path (default: runs/show/<attack>.png).")
@click.option("--data-root", type=click.Path(file_okay=False, path_type=Path), default=None, help="Where datasets live.")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None, help="Poison cache (else $UEBENCH_CACHE).")
@click.option("--device", default=None, help="auto | cpu | cuda | cuda:N | mps.")
def show_poison_cmd(target, attack, params, dataset, n_train, per_class, seed, out, data_root, cache_dir, device) -> None:
    """Write a montage of a poison: clean | perturbation ×255/ε | poisoned, per class; print its stats."""
    from bench.show import parse_params, show_poison

    try:
        path, stats = show_poison(target, parse_params(params), dataset, n_train, per_class, out, data_root, seed, device,
                                  attack, cache_dir)
    except ValueError as exc:
        fail(str(exc).replace("\n", " "))
    a = stats["attack_stats"]
    made = "generated now" if stats["generated"] else "read from the cache"
    click.echo(f"{path}  [{stats['attack']}: {stats['threat']}; {made}]")
    psnr = "—" if stats["poison_psnr"] is None else f"{stats['poison_psnr']:.2f} dB"
    click.echo(f"measured: linf {stats['poison_linf']:g}/255, l2 {stats['poison_l2']:.3f}, psnr {psnr}")
    keys = [k for k in ("rounds", "converged", "final_acc", "final_error", "seconds") if k in a]
    if keys:
        click.echo("attack: " + ", ".join(f"{k} {a[k]}" for k in keys))


@main.group("export")
def export_group() -> None:
    """Write what uebench made in formats other codebases read."""


@export_group.command("poison")
@click.argument("target", metavar="CONFIG_OR_ATTACK")
@click.option("--attack", "-a", default=None, help="With a config: the attack label to export [default: the first that is not none].")
@click.option("--param", "-p", "params", multiple=True, help="Attack param as key=value (YAML value); with an attack name.")
@click.option("--dataset", default="cifar10-mini", show_default=True, help="Dataset, with an attack name.")
@click.option("--n-train", type=click.IntRange(min=2), default=None, help="Stratified train subset (default: all).")
@click.option("--seed", type=click.IntRange(min=0, max=2**32 - 1), default=0, show_default=True)
@click.option("--format", "fmt", type=click.Choice(["npz", "png"]), default="npz", show_default=True)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="The .npz file, or the folder for the PNGs.")
@click.option("--data-root", type=click.Path(file_okay=False, path_type=Path), default=None)
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None)
@click.option("--device", default=None)
def export_poison_cmd(target, attack, params, dataset, n_train, seed, fmt, out, data_root, cache_dir, device) -> None:
    """Write a published poisoned training set: an .npz (x uint8 NHWC, y, classes) or a folder
    of <idx>.png (APBench's layout), from the cache if it is there; print its sha256."""
    from bench.export import export_poison
    from bench.show import parse_params

    try:
        path, digest, n = export_poison(target, parse_params(params), dataset, n_train, seed, fmt, out, data_root, cache_dir, device, attack)
    except ValueError as exc:
        fail(str(exc).replace("\n", " "))
    click.echo(f"{path}: {n} poisoned training images ({fmt}); sha256 {digest}")
    click.echo(f"evaluate it with: {{name: external, params: {{path: {path}, sha256: {digest}}}}}", err=True)
