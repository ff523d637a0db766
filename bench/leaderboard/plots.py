"""The leaderboard's figures (matplotlib, headless): per section an attack × defense heatmap
and the learning curves (clean test accuracy per epoch under standard training, each attack
against the clean reference, the curve the papers show); accuracy vs poison ratio where
ratios exist. Small PNGs beside the leaderboard, written only when their content changed.
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd

from bench.atomic import atomic_write_bytes
from bench.leaderboard.sections import REFERENCE_DEFENSE, Section


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 8, "svg.hashsalt": "uebench"})
    return plt


def _save(fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    data = buf.getvalue()
    if not path.exists() or path.read_bytes() != data:
        atomic_write_bytes(path, data)


def heatmap(s: Section, path: Path) -> None:
    plt = _figure()
    import numpy as np

    grid = np.array([[s.grid[(a, d)].mean if (a, d) in s.grid else np.nan for d in s.defenses] for a in s.attacks])
    fig, ax = plt.subplots(figsize=(1.1 + 0.75 * len(s.defenses), 0.9 + 0.32 * len(s.attacks)))
    im = ax.imshow(grid, cmap="RdYlGn", vmin=0, vmax=max(10.0, float(np.nanmax(grid)) if np.isfinite(grid).any() else 100.0), aspect="auto")
    ax.set_xticks(range(len(s.defenses)), s.defenses, rotation=35, ha="right")
    ax.set_yticks(range(len(s.attacks)), s.attacks)
    for i in range(len(s.attacks)):
        for j in range(len(s.defenses)):
            if np.isfinite(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:.0f}", ha="center", va="center", fontsize=7)
    ax.set_title(f"{s.dataset} · {s.arch} · {s.epochs} ep: clean test acc. (%)")
    fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02)
    _save(fig, path)
    plt.close(fig)


def _curve(results_dir: Path, cell_hash: str) -> list[float] | None:
    path = Path(results_dir) / "curves" / f"{cell_hash}.json"
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    accs = [c.get("test_acc") for c in rec.get("curve", []) if isinstance(c, dict)]
    return [100 * a for a in accs] if accs and all(isinstance(a, (int, float)) for a in accs) else None


def curves(s: Section, rows: pd.DataFrame, results_dir: Path, path: Path) -> bool:
    """Mean learning curve of every attack under standard training; False if no curve exists."""
    plt = _figure()
    fig, ax = plt.subplots(figsize=(5.2, 3.2))
    drawn = 0
    for a in s.attacks:
        got = [c for h in rows[(rows["attack"] == a) & (rows["defense"] == REFERENCE_DEFENSE)]["cell_hash"] if (c := _curve(results_dir, h))]
        if not got:
            continue
        n = min(len(c) for c in got)
        mean = [sum(c[e] for c in got) / len(got) for e in range(n)]
        ax.plot(range(1, n + 1), mean, lw=2.2 if a == "none" else 1.2, color="black" if a == "none" else None, label=a)
        drawn += 1
    if drawn:
        ax.set_xlabel("epoch")
        ax.set_ylabel("clean test accuracy (%)")
        ax.set_title(f"{s.dataset} · {s.arch}: standard training on each poison")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, ncol=2)
        _save(fig, path)
    plt.close(fig)
    return bool(drawn)


def ratio_plot(s: Section, path: Path) -> bool:
    if not s.partial:
        return False
    plt = _figure()
    fig, ax = plt.subplots(figsize=(4.2, 3.0))
    for a in sorted({a for a, _ in s.partial}):
        pts = sorted((r, st.mean) for (b, r), st in s.partial.items() if b == a)
        full = s.grid.get((a, REFERENCE_DEFENSE))
        if full is not None:
            pts.append((1.0, full.mean))
        ax.plot([100 * r for r, _ in pts], [m for _, m in pts], marker="o", label=a)
    ax.set_xlabel("poisoned share of the training set (%)")
    ax.set_ylabel("clean test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)
    _save(fig, path)
    plt.close(fig)
    return True


def draw(sections: list[Section], ok: pd.DataFrame, results_dir: Path, out_dir: Path, link_prefix: str) -> dict[str, dict[str, str]]:
    """Every figure of every section into ``out_dir``; returns section slug -> {name: link}."""
    links: dict[str, dict[str, str]] = {}
    out_dir.mkdir(parents=True, exist_ok=True)
    for s in sections:
        rows = ok[(ok["dataset"] == s.dataset) & (ok["arch"] == s.arch) & (ok["n_pool"] == s.n_pool) & (ok["train"] == s.train)]
        got = {}
        heatmap(s, out_dir / f"{s.slug}-heatmap.png")
        got["heatmap"] = f"{link_prefix}{s.slug}-heatmap.png"
        if curves(s, rows, results_dir, out_dir / f"{s.slug}-curves.png"):
            got["learning curves"] = f"{link_prefix}{s.slug}-curves.png"
        if ratio_plot(s, out_dir / f"{s.slug}-ratio.png"):
            got["accuracy vs poison ratio"] = f"{link_prefix}{s.slug}-ratio.png"
        links[s.slug] = got
    return links
