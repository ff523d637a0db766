"""The seed papers' findings, each a check over result rows (``uebench findings``).

A finding is a statement the papers make (F1 … F8), its numbers in the paper, and a check
that evaluates it on the rows of a matrix (``configs/repro_cpu.yaml`` names its attacks and
defenses with the labels used here). A check reports the means it compared (over seeds),
their spread, whether the stated ordering and gap hold, and whether the difference exceeds
the seeds' spread. ``docs/REPRODUCTION.md``'s table is generated from these checks over the
published rows (``python scripts/update_docs.py``).
"""
from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd

STANDARD, GRAY = "standard", "grayscale"
MLP = "mlp_gg"  # Going Grayscale's MLP exploiter (sigmoid outputs), Table 6's MLP row


@dataclass
class Outcome:
    holds: bool | None  # None: the rows it needs are missing
    measured: str  # what was compared, in one line
    detail: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Finding:
    key: str
    source: str
    claim: str
    paper: str
    check: Callable[["Cells"], Outcome]


class Cells:
    """Mean, spread and run count of clean_acc_final per (attack, defense, arch, ratio)."""

    def __init__(self, df: pd.DataFrame, arch: str | None = None):
        ok = df[df["status"] == "ok"]
        self.default_arch = arch or (ok["arch"].mode().iloc[0] if len(ok) else "")
        self.groups = {k: list(g["clean_acc_final"]) for k, g in ok.groupby(["attack", "defense", "arch", "poison_ratio"])}

    def get(self, attack: str, defense: str = STANDARD, arch: str | None = None, ratio: float = 1.0) -> tuple[float, float, int] | None:
        v = self.groups.get((attack, defense, arch or self.default_arch, ratio))
        if not v:
            return None
        return statistics.fmean(v), (statistics.stdev(v) if len(v) > 1 else 0.0), len(v)

    def mean(self, *a, **k) -> float | None:
        got = self.get(*a, **k)
        return None if got is None else got[0]


def cell_text(c, attack, defense=STANDARD, arch=None, ratio=1.0) -> str:
    got = c.get(attack, defense, arch, ratio)
    if got is None:
        return f"{attack}/{defense}: —"
    m, s, n = got
    return f"{attack}/{defense}{'' if arch is None else '@' + arch}{'' if ratio == 1.0 else f' {ratio:.0%}'} {m:.1f}±{s:.1f} (n={n})"


def missing_rows(c: Cells, *needs) -> Outcome | None:
    lacking = [cell_text(c, *n) for n in needs if c.get(*n) is None]
    return Outcome(None, "missing rows: " + "; ".join(lacking)) if lacking else None


def _spread(c: Cells, a, b) -> float:
    ga, gb = c.get(*a), c.get(*b)
    return (ga[1] + gb[1]) if ga and gb else 0.0


def f1(c: Cells) -> Outcome:
    needs = [("none",), ("em-sample",), ("em-class",), ("random-sample",), ("random-class",)]
    if m := missing_rows(c, *needs):
        return m
    clean = c.mean("none")
    drops = {a: clean - c.mean(a) for a in ("em-sample", "em-class", "random-sample", "random-class")}
    holds = drops["em-sample"] >= 30 and drops["em-class"] >= 30 and drops["random-sample"] < 5 and drops["random-class"] < 5
    return Outcome(holds, ", ".join(f"{a} {_change(-d)}" for a, d in drops.items()) + f" (clean {clean:.1f})", [cell_text(c, *n) for n in needs])


def _recovers(c: Cells, attack: str, defense: str, share: float) -> tuple[bool, str]:
    clean, std, dfn = c.mean("none"), c.mean(attack), c.mean(attack, defense)
    took, back = clean - std, dfn - std
    if took <= 0:
        return False, f"{attack}: took nothing"
    return back >= share * took, f"{attack}: {defense} recovers {back:.1f} of {took:.1f} ({back / took:.0%})"


def f2(c: Cells) -> Outcome:
    needs = [("none",), ("em-sample",), ("em-sample", GRAY), ("em-class",), ("em-class", GRAY)]
    if m := missing_rows(c, *needs):
        return m
    a, ta = _recovers(c, "em-sample", GRAY, 2 / 3)
    b, tb = _recovers(c, "em-class", GRAY, 2 / 3)
    return Outcome(a and b, f"{ta}; {tb}", [cell_text(c, *n) for n in needs])


def f3(c: Cells) -> Outcome:
    needs = [("none",), ("none", GRAY), ("uleo-grayaugs",), ("uleo-grayaugs", GRAY), ("uleo-gray-class", GRAY)]
    if m := missing_rows(c, *needs):
        return m
    clean, clean_g = c.mean("none"), c.mean("none", GRAY)
    gaps = {"uleo-grayaugs/standard": clean - c.mean("uleo-grayaugs"), "uleo-grayaugs/grayscale": clean_g - c.mean("uleo-grayaugs", GRAY),
            "uleo-gray-class/grayscale": clean_g - c.mean("uleo-gray-class", GRAY)}
    return Outcome(all(g >= 25 for g in gaps.values()), ", ".join(f"{k} {g:.1f} below clean" for k, g in gaps.items()), [cell_text(c, *n) for n in needs])


def f4(c: Cells) -> Outcome:
    cnn = c.default_arch
    needs = [("none", STANDARD, cnn), ("em-mlp", STANDARD, cnn), ("none", STANDARD, MLP), ("em-mlp", STANDARD, MLP)]
    if m := missing_rows(c, *needs):
        return m
    d_cnn = c.mean("none", STANDARD, cnn) - c.mean("em-mlp", STANDARD, cnn)
    d_mlp = c.mean("none", STANDARD, MLP) - c.mean("em-mlp", STANDARD, MLP)
    return Outcome(d_cnn >= 25 and d_cnn > d_mlp, f"{cnn} {_change(-d_cnn)}, {MLP} {_change(-d_mlp)}", [cell_text(c, *n) for n in needs])


def _change(v: float) -> str:
    """A signed change in points, with a real minus sign: −47.8, +0.6."""
    return f"{v:+.1f}".replace("-", "−")


def f5(c: Cells) -> Outcome:
    needs = [("none",), ("em-sample",), ("em-sample", "bdr-2"), ("em-sample", "jpeg")]
    if m := missing_rows(c, *needs):
        return m
    std = c.mean("em-sample")
    back = {d: c.mean("em-sample", d) - std for d in ("bdr-2", "jpeg")}
    holds = all(b > max(2.0, _spread(c, ("em-sample",), ("em-sample", d))) for d, b in back.items())
    return Outcome(holds, ", ".join(f"{d} recovers {b:+.1f}" for d, b in back.items()) + f" of {c.mean('none') - std:.1f}", [cell_text(c, *n) for n in needs])


def f6(c: Cells) -> Outcome:
    needs = [("none", "at"), ("em-sample", "at")]
    if m := missing_rows(c, *needs):
        return m
    gap = c.mean("none", "at") - c.mean("em-sample", "at")
    return Outcome(abs(gap) <= 5, f"at: clean {c.mean('none', 'at'):.1f} vs em-sample {c.mean('em-sample', 'at'):.1f} (gap {gap:+.1f})",
                   [cell_text(c, *n) for n in needs])


def f7(c: Cells) -> Outcome:
    needs = [("none",), ("em-sample",), ("em-sample", "st"), ("em-sample", "st-cg"), ("em-sample", "st-full"), ("none", "st-full")]
    if m := missing_rows(c, *needs):
        return m
    std, st, cg, full = (c.mean("em-sample", d) for d in (STANDARD, "st", "st-cg", "st-full"))
    ok_full, text = _recovers(c, "em-sample", "st-full", 2 / 3)
    cost = c.mean("none") - c.mean("none", "st-full")
    order = std <= min(st, cg) and max(st, cg) <= full
    return Outcome(ok_full and cost <= 3 and order, f"{text}; clean cost {cost:+.1f}; NT {std:.1f} ≤ ST {st:.1f}, ST-CG {cg:.1f} ≤ ST-Full {full:.1f}",
                   [cell_text(c, *n) for n in needs])


def f8(c: Cells) -> Outcome:
    needs = [(a, STANDARD, None, r) for r in (0.2, 0.5) for a in ("em-sample", "clean-only")]
    if m := missing_rows(c, *needs):
        return m
    diffs = {r: c.mean("em-sample", ratio=r) - c.mean("clean-only", ratio=r) for r in (0.2, 0.5)}
    return Outcome(all(abs(d) <= 3 for d in diffs.values()), ", ".join(f"{r:.0%} poisoned: {d:+.1f} vs clean-only" for r, d in diffs.items()),
                   [cell_text(c, *n) for n in needs])


FINDINGS = [
    Finding("F1", "EM Table 1", "sample- and class-wise EM each lower clean accuracy by ≥ 30 points; random noise of the same budget by < 5",
            "RN-18 CIFAR-10: clean 94.77, EM sample 19.93, class 16.42; random ≈ clean (Fig. 1)", f1),
    Finding("F2", "Going Grayscale Table 2", "the grayscale exploiter recovers ≥ 2/3 of what sample-wise ULEO took, and of what class-wise EM took",
            "ULEO 24.47 → gray 90.06 (clean 94.58 / gray 93.04)", f2),
    Finding("F3", "Going Grayscale Table 2",
            "ULEO-GrayAugs stays ≥ 25 points below clean under standard and grayscale training; ULEO-Gray survives grayscale (class-wise)",
            "GrayAugs 25.98 / gray 24.98; ULEO-Grays 43.34 / 44.67", f3),
    Finding("F4", "Going Grayscale Table 6", "MLP-made ULEO lowers the CNN exploiter by ≥ 25 points, and the CNN falls further than the MLP",
            "RN-18 94.58 → 21.55; MLP 48.66 → 47.50", f4),
    Finding("F5", "Going Grayscale Table 8, APBench", "BDR-2 and JPEG recover part of the EM gap",
            "BDR-2 24.40 → 47.10; APBench EM: BDR 37.94, JPEG 80.72 (standard 20.78)", f5),
    Finding("F6", "EM App. D, Going Grayscale Table 7", "AT on EM data ends within 5 points of AT on clean data", "AT clean 85.30, ULEO 84.75", f6),
    Finding("F7", "ST Table II", "ST-Full recovers ≥ 2/3 of the EM gap and costs clean data ≤ 3 points; ST and ST-CG rank between NT and ST-Full",
            "EM: NT 19.93, ST 58.63, ST-CG 80.18, ST-Full 87.05; clean NT 92.41, ST-Full 93.79", f7),
    Finding("F8", "EM Table 2, Going Grayscale Table 4", "with 20 % and 50 % poisoned, accuracy is within 3 points of the clean-only baseline",
            "EM Table 2: 20 % 94.38 vs clean-only 94.11; 50 % 93.35 vs 93.64", f8),
]


def evaluate(df: pd.DataFrame, arch: str | None = None) -> list[tuple[Finding, Outcome]]:
    cells = Cells(df, arch)
    return [(f, f.check(cells)) for f in FINDINGS]


def markdown(results: list[tuple[Finding, Outcome]], what: str = "finding") -> str:
    """A table of the findings (or orderings: ``what`` names the first column), then for each
    the cells it compared (mean ± std over seeds, n runs)."""
    lines = [f"| {what} | source | claim | paper | measured | holds |", "|---|---|---|---|---|---|"]
    for f, o in results:
        mark = {True: "yes", False: "**no**", None: "not run"}[o.holds]
        lines.append(f"| {f.key} | {f.source} | {f.claim} | {f.paper} | {o.measured} | {mark} |")
    lines += ["", "Cells compared (clean test accuracy %, mean ± std over seeds, n runs):", ""]
    lines += [f"- **{f.key}**: " + ("; ".join(o.detail) if o.detail else "—") for f, o in results]
    return "\n".join(lines)
