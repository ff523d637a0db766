"""``uebench calibrate-st``: choose ST's τ and β the paper's way, on a matrix's own poison.

ST's paper picks its threshold τ and hyperparameter β by the accuracy of the resulting
model on 20 clean images (its §IV-C4). The values it found were lost, and they depend on
the ACM reconstruction, the architecture and the scale, so they have to be chosen again at
the scale the numbers are reported at. This command does that for one poison of a matrix:
it takes the poison from the cache (made once if missing), the matrix's training settings
and the params its config gives the ST variant, trains one exploiter per (τ, β) of the grid
(`defenses.st.calibrate`), and scores each on the dataset's clean ``holdout`` images, never
on the test set. It writes the grid's scores and the chosen pair as JSON; put the pair and
the printed ``calibration`` text into the config's ST entries.
"""
from __future__ import annotations

import json
from pathlib import Path

import click

from bench.cli.app import fail, main


def _floats(text: str, name: str) -> list[float]:
    try:
        vals = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        vals = []
    if not vals or any(v <= 0 for v in vals):
        raise click.BadParameter(f"expected positive numbers separated by commas, e.g. 1,1.5,2; got {text!r}", param_hint=name)
    return vals


@main.command("calibrate-st")
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--attack", required=True, help="The poison to calibrate on: an attack label (or name) of the matrix, e.g. em-sample.")
@click.option("--seed", type=int, default=0, show_default=True, help="Its seed (the poison's and the exploiters').")
@click.option("--variant", type=click.Choice(["st", "st-cg", "st-full"]), default="st", show_default=True)
@click.option("--taus", default="1,1.5,2", show_default=True, help="The τ grid.")
@click.option("--betas", default="0.5", show_default=True, help="The β grid.")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Where the JSON record goes.")
@click.option("--data-root", type=click.Path(file_okay=False, path_type=Path), default=None)
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None)
@click.option("--device", default=None, help="auto | cpu | cuda | cuda:N | mps.")
@click.option("--set", "sets", multiple=True, metavar="FIELD=VALUE", help="Override a config field (repeatable).")
def calibrate_st(config, attack, seed, variant, taus, betas, output, data_root, cache_dir, device, sets) -> None:
    """Grid-search ST's τ × β on the clean holdout of CONFIG's dataset, for one of its poisons."""
    taus, betas = _floats(taus, "--taus"), _floats(betas, "--betas")
    from bench.atomic import atomic_write
    from bench.cache import Cache, resolve_cache_dir
    from bench.configfile import load_matrix
    from bench.datasets.common import resolve_data_root
    from bench.device import prepare_device
    from bench.models import create_model
    from bench.plan import plan
    from bench.poison import load_dataset, make_poison
    from defenses.st.calibrate import calibrate

    m = load_matrix(config, {"device": device}, sets)
    p = plan(m)
    full = [c for c in p.cells if c.seed == seed and not c.poison.clean_only and c.poison.poison_ratio == 1.0]
    cells = [c for c in full if c.poison.label == attack] or [c for c in full if c.poison.attack.name == attack]
    if not cells:
        labels = sorted({c.poison.label for c in p.cells if not c.poison.clean_only})
        fail(f"--attack: no fully poisoned cell of {attack!r} with seed {seed} in {config} (attacks: {', '.join(labels)})")
    task = cells[0].poison
    if not task.dataset.holdout:
        fail(f"datasets: {task.dataset.name} has no clean holdout to score on; give it `holdout: 20` (the paper's 20 clean images)")
    specs = [d for c in p.cells for d in c.defense if d.name == variant]
    params = {k: v for k, v in (specs[0].params if specs else {}).items() if k not in ("tau", "beta", "calibration")}

    dev = prepare_device(m.device)
    clean = load_dataset(task.dataset, resolve_data_root(str(data_root) if data_root else m.data_root))
    record = make_poison(task, p.settings.apply, clean, Cache(resolve_cache_dir(cache_dir)), dev)
    train, holdout = record.splits.train, record.splits.holdout
    c, h, _ = train.x.shape[1:]
    arch = cells[0].arch
    make = lambda: create_model(arch, num_classes=record.splits.num_classes, in_chans=c, img_size=h)
    got = calibrate(make, train, holdout, p.settings.train, taus, betas, variant=variant, seed=seed, **params)
    text = f"{len(holdout)} clean holdout images, {attack} seed {seed}, grid tau {taus} x beta {betas}: tau={got['tau']:g}, beta={got['beta']:g}"
    out = {
        "config": str(config), "matrix": m.name, "attack": attack, "seed": seed, "variant": variant, "arch": arch,
        "dataset": task.dataset.model_dump(mode="json"), "params": params, "train": p.settings.train.model_dump(mode="json"),
        "holdout": len(holdout), "scores": got["scores"], "tau": got["tau"], "beta": got["beta"], "holdout_acc": got["val_acc"],
        "calibration": text,
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(output, json.dumps(out, indent=2) + "\n")
    for s in got["scores"]:
        click.echo(f"tau {s['tau']:g}  beta {s['beta']:g}  holdout acc {100 * s['val_acc']:.1f} %  crossings {s['crossings']}")
    click.echo(f"chosen: tau {got['tau']:g}, beta {got['beta']:g}; in the config: {{tau: {got['tau']:g}, beta: {got['beta']:g}, calibration: \"{text}\"}}")
    click.echo(f"written to {output}", err=True)
