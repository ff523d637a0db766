"""Look at a poison: a PNG montage in the manner of Going Grayscale's Figure 1.

One row per class, a few images per row, each as three tiles: the clean image, the published
perturbation amplified to the full range (δ·255/ε·0.5 + 0.5, so mid-gray is zero and the
budget maps to black/white) and the published poisoned image. The perturbation shown is the
one the harness publishes (uint8 poisoned − clean, after ``apply`` and quantization), not the
attack's float δ, so what you see is what an exploiter gets. For L2/L0 attacks the tiles are
scaled by the largest change shown instead of ε.

The poison is the harness's own (`bench.poison.make_poison`: generate or read from the
cache, apply, validate), from an attack name plus params, or from a matrix YAML: the poison
whose attack label is ``attack`` (the first non-clean attack by default), first dataset and
seed. A poison the cache holds is read, not regenerated.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from registry.lazy import lazy_import

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from bench.config import Matrix
    from bench.data import ImageData
else:
    torch = lazy_import("torch")

DEFAULT_OUT_DIR = Path("runs/show")


@dataclass(frozen=True)
class Layout:
    """Geometry of the montage, in output pixels."""

    zoom: int = 3
    gap: int = 2  # between the three tiles of one image
    group_gap: int = 10  # between images
    label_width: int = 84
    header: int = 34


def parse_params(pairs: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """``k=v`` strings to a dict; each value is read as YAML (``8`` → 8, ``true`` → True)."""
    import yaml

    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--param: expected key=value, got {pair!r} (e.g. --param source_arch=mlp)")
        out[key.strip()] = yaml.safe_load(value)
    return out


def matrix_for(target: str, params: dict[str, Any], dataset: str, n_train: int | None, seed: int) -> "Matrix":
    """The matrix to preview: the YAML at ``target``, or one built around the attack named ``target``."""
    from bench.config import parse_matrix
    from bench.configfile import load_matrix

    if target.endswith((".yaml", ".yml")) or Path(target).is_file():
        if params:
            raise ValueError("--param: only with an attack name; a config's attack params are in the config")
        return load_matrix(target)
    raw = {
        "name": "show",
        "datasets": [{"name": dataset, "n_train": n_train}],
        "attacks": [{"name": target, "params": params}],
        "archs": ["mlp"],
        "seeds": [seed],
    }
    return parse_matrix(raw, "show")


def pick_task(m: "Matrix", attack: str | None, seed: int | None = None):
    """The poison task to show: by attack label (else the first that is not ``none``)."""
    from bench.plan import plan

    tasks = list(plan(m).poisons.values())
    labels = list(dict.fromkeys(t.label for t in tasks if t.attack is not None))
    if attack is None:
        chosen = [t for t in tasks if t.attack is not None and t.attack.name != "none"] or tasks
    else:
        chosen = [t for t in tasks if t.label == attack]
        if not chosen:
            import difflib

            close = difflib.get_close_matches(attack, labels, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"--attack: no attack labelled {attack!r} in {m.name}{hint} (labels: {', '.join(labels)})")
    if seed is not None:
        chosen = [t for t in chosen if t.seed == seed] or chosen
    return chosen[0]


def show_poison(
    target: str,
    params: dict[str, Any] | None = None,
    dataset: str = "cifar10-mini",
    n_train: int | None = None,
    per_class: int = 4,
    out: Path | None = None,
    data_root: Path | None = None,
    seed: int = 0,
    device: str | None = None,
    attack: str | None = None,
    cache_dir: Path | None = None,
) -> tuple[Path, dict]:
    """Write the montage of one poison of ``target`` (from the cache if it is there);
    returns (path, what the poison's row would report: threat, measured budget, attack stats)."""
    import json

    from bench.cache import Cache, resolve_cache_dir
    from bench.datasets.common import resolve_data_root
    from bench.device import prepare_device
    from bench.poison import load_dataset, make_poison

    m = matrix_for(target, params or {}, dataset, n_train, seed)
    task = pick_task(m, attack, seed if attack is None and not Path(target).is_file() else None)
    root = resolve_data_root(str(data_root) if data_root else m.data_root)
    clean = load_dataset(task.dataset, root)
    record = make_poison(task, m.apply, clean, Cache(resolve_cache_dir(cache_dir)), prepare_device(device or m.device))
    facts = record.facts
    title = f"attack: {task.label} | data: {task.dataset.name} | threat: {facts.threat}"
    eps = facts.epsilon if facts.threat.startswith("linf") else None
    img = montage(clean.train, record.splits.train, per_class, eps, title)
    name = (task.attack.name if task.attack is not None else "clean-only") if Path(target).suffix not in (".yaml", ".yml") else task.label
    path = Path(out) if out is not None else DEFAULT_OUT_DIR / f"{_safe(name)}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    stats = {
        "attack": task.label, "threat": facts.threat, "poison_linf": facts.linf, "poison_l2": facts.l2,
        "poison_psnr": facts.psnr, "generated": bool(record.generated), "attack_stats": json.loads(facts.attack_stats),
    }
    return path, stats


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_.@" else "_" for ch in name)


def pick_per_class(y: "torch.Tensor", num_classes: int, per_class: int) -> "torch.Tensor":
    """Indices of the first ``per_class`` images of every class, class by class: (K, per_class);
    -1 where a class has fewer images."""
    y = y.cpu()
    order = torch.argsort(y, stable=True)
    counts = torch.bincount(y, minlength=num_classes)
    rank = torch.empty_like(y)
    rank[order] = torch.arange(len(y)) - (torch.cumsum(counts, 0) - counts)[y[order]]
    table = torch.full((num_classes, per_class), -1, dtype=torch.long)
    keep = rank < per_class
    table[y[keep], rank[keep]] = torch.nonzero(keep).flatten()
    return table


def montage(
    clean: "ImageData", poisoned: "ImageData", per_class: int = 4, epsilon: float | None = None, title: str = ""
) -> "Image.Image":
    """The clean | amplified perturbation | poisoned grid (see the module docstring)."""
    from PIL import Image, ImageDraw

    lay = Layout()
    table = pick_per_class(clean.y, clean.num_classes, per_class)
    idx = table[table >= 0]
    x0 = clean.x[idx].cpu().to(torch.int16)
    x1 = poisoned.x[idx].cpu().to(torch.int16)
    diff = (x1 - x0).float()
    scale = epsilon if epsilon else max(1.0, float(diff.abs().max()))
    pert = (diff / scale * 0.5 + 0.5).clamp(0, 1).mul(255).round().to(torch.uint8)
    tiles = {"clean": x0.to(torch.uint8), "pert": pert, "poisoned": x1.to(torch.uint8)}

    k, (h, w) = clean.num_classes, clean.x.shape[2:]
    th, tw = h * lay.zoom, w * lay.zoom
    group_w = 3 * tw + 2 * lay.gap
    width = lay.label_width + per_class * group_w + (per_class - 1) * lay.group_gap + lay.gap
    height = lay.header + k * (th + lay.gap)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((4, 2), title, fill="black")
    amp = f"delta x{255 / scale:.3g}" + ("" if epsilon else " (max)")  # the default bitmap font is ASCII only
    for j in range(per_class):
        gx = lay.label_width + j * (group_w + lay.group_gap)
        for t, name in enumerate(("clean", amp, "poisoned")):
            draw.text((gx + t * (tw + lay.gap) + 2, lay.header - 14), name, fill="black")
    pos = {int(i): n for n, i in enumerate(idx.tolist())}
    for row in range(k):
        ty = lay.header + row * (th + lay.gap)
        draw.text((4, ty + th // 2 - 6), clean.classes[row][:12], fill="black")
        for j in range(per_class):
            i = int(table[row, j])
            if i < 0:
                continue
            gx = lay.label_width + j * (group_w + lay.group_gap)
            for t, key in enumerate(("clean", "pert", "poisoned")):
                canvas.paste(_tile(tiles[key][pos[i]], lay.zoom), (gx + t * (tw + lay.gap), ty))
    return canvas


def _tile(chw: "torch.Tensor", zoom: int) -> "Image.Image":
    from PIL import Image

    arr = chw.permute(1, 2, 0).contiguous().numpy()
    img = Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr, "L" if arr.shape[2] == 1 else "RGB")
    return img.resize((img.width * zoom, img.height * zoom), Image.NEAREST)


__all__ = ["montage", "parse_params", "pick_per_class", "show_poison"]
