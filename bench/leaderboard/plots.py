"""The leaderboard's figures (matplotlib, headless): per section an attack × defense heatmap
and the learning curves (clean test accuracy per epoch under standard training, each attack
against the clean reference, the curve the papers show); accuracy vs poison ratio where
ratios exist; ST's cluster measure (ACM) per epoch on each poison against the clean data
where ST rows exist (how its threshold τ sits between the two). Small PNGs beside the
leaderboard, written only when their content changed; a figure the leaderboard no longer
links is removed.
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


def _acm(report: str) -> tuple[list[float], float] | None:
    """The ACM history and τ of a row's ST report, or None (not an ST row)."""
    try:
        st = json.loads(report or "{}").get("st") or {}
        hist = [float(h["acm"]) for h in st.get("acm_history", [])]
        return (hist, float(st["tau"])) if hist else None
    except (ValueError, TypeError, KeyError, AttributeError):
        return None


def acm_plot(s: Section, rows: pd.DataFrame, path: Path) -> bool:
    """ACM per epoch of every ST-family run, one panel per ST variant: each attack a colour,
    the clean data black, τ dashed; False if the section has no ST row."""
    st_rows = rows[rows["defense_report"].fillna("").str.contains('"acm_history"', regex=False)] if "defense_report" in rows else rows[:0]
    variants = sorted(st_rows["defense"].unique()) if len(st_rows) else []
    if not variants:
        return False
    plt = _figure()
    fig, axes = plt.subplots(1, len(variants), figsize=(3.4 * len(variants), 2.8), squeeze=False, sharey=True)
    for ax, d in zip(axes[0], variants):
        taus = set()
        for a, g in st_rows[st_rows["defense"] == d].groupby("attack"):
            for k, rep in enumerate(g["defense_report"]):
                got = _acm(rep)
                if got is None:
                    continue
                hist, tau = got
                taus.add(tau)
                ax.plot(range(1, len(hist) + 1), hist, lw=2.0 if a == "none" else 1.0, color="black" if a == "none" else None,
                        label=a if k == 0 else None, alpha=0.9)
        for tau in taus:
            ax.axhline(tau, ls="--", lw=0.8, color="grey")
        ax.set_title(f"{d}\nACM per epoch (τ dashed)", fontsize=7)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    axes[0][0].set_ylabel("ACM")
    _save(fig, path)
    plt.close(fig)
    return True


def draw(sections: list[Section], ok: pd.DataFrame, results_dir: Path, out_dir: Path, link_prefix: str) -> dict[str, dict[str, str]]:
    """Every figure of every section into ``out_dir``; returns section slug -> {name: link}."""
    links: dict[str, dict[str, str]] = {}
    out_dir.mkdir(parents=True, exist_ok=True)
    for s in sections:
        rows = s.rows(ok)
        got = {}
        heatmap(s, out_dir / f"{s.slug}-heatmap.png")
        got["heatmap"] = f"{link_prefix}{s.slug}-heatmap.png"
        if curves(s, rows, results_dir, out_dir / f"{s.slug}-curves.png"):
            got["learning curves"] = f"{link_prefix}{s.slug}-curves.png"
        if ratio_plot(s, out_dir / f"{s.slug}-ratio.png"):
            got["accuracy vs poison ratio"] = f"{link_prefix}{s.slug}-ratio.png"
        if acm_plot(s, rows, out_dir / f"{s.slug}-st-acm.png"):
            got["ST's ACM, clean vs poisoned"] = f"{link_prefix}{s.slug}-st-acm.png"
        links[s.slug] = got
    _prune(out_dir, {Path(link).name for got in links.values() for link in got.values()})
    return links


KINDS = ("-heatmap.png", "-curves.png", "-ratio.png", "-st-acm.png")
"""The name endings of the figures ``draw`` makes: the only files it ever removes."""


def _prune(out_dir: Path, drawn: set[str]) -> None:
    """Remove the figures of an earlier build that this build no longer links (a section
    gone, or its ST rows), so the folder holds exactly what the leaderboard shows."""
    for path in out_dir.glob("*.png"):
        if path.name not in drawn and path.name.endswith(KINDS):
            path.unlink()
