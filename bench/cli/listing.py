"""``uebench list KIND [PATTERN] [--params]``: what is registered, and what each plugin takes."""
from __future__ import annotations

import click

from bench.cli.app import main

KINDS = ("attacks", "defenses", "datasets", "models")


def params_table(entry) -> list[str]:
    """One line per param: name, type, default (as the plugin validates it), description."""
    from pydantic import ValidationError

    fields = entry.params.model_fields
    if not fields:
        return ["    (no params)"]
    try:
        defaults = entry.params().model_dump(mode="json")
    except ValidationError:  # a plugin with required params
        defaults = {}
    width = max(len(n) for n in fields)
    out = []
    for name, f in fields.items():
        shown = repr(defaults[name]) if name in defaults else "(required)"
        ann = getattr(f.annotation, "__name__", None) or str(f.annotation).replace("typing.", "")
        desc = f" — {f.description}" if f.description else ""
        out.append(f"    {name:<{width}}  {ann} = {shown}{desc}")
    return out


@main.command("list")
@click.argument("kind", type=click.Choice(KINDS))
@click.argument("pattern", default="*")
@click.option("--params", "show_params", is_flag=True, help="Also show each plugin's params: type, default, description.")
def list_cmd(kind: str, pattern: str, show_params: bool) -> None:
    """List registered plugins of KIND whose names match PATTERN (wildcards)."""
    if kind == "models":
        from bench.models import list_models

        for name in list_models(pattern):
            click.echo(name)
        return
    import registry

    reg = {"attacks": registry.ATTACKS, "defenses": registry.DEFENSES, "datasets": registry.DATASETS}[kind]
    names = reg.list(pattern)
    if not names:
        click.echo(f"no {kind} match {pattern!r} (see `uebench list {kind}`)", err=True)
        raise SystemExit(2 if pattern != "*" else 0)
    width = max(len(n) for n in names)
    for name in names:
        e = reg.get(name)
        extra = []
        if "threat" in e.meta:
            extra.append(e.meta["threat"].describe())
        if "cost" in e.meta:
            extra.append(f"cost: {e.meta['cost']}")
        if e.version != "1":
            extra.append(f"v{e.version}")
        if e.source != "builtin":
            extra.append(e.source)
        tail = f"  [{'; '.join(extra)}]" if extra else ""
        click.echo(f"{name:<{width}}  {e.description}{tail}")
        if e.reference:
            click.echo(f"{'':<{width}}  reference: {e.reference}")
        if show_params:
            for line in params_table(e):
                click.echo(line)
