"""``leaderboard.md`` and ``leaderboard.csv`` from the sections: text only, deterministic (no
timestamps, stable orders, fixed number formats), so the same rows give the same bytes."""
from __future__ import annotations

import csv
import io
from pathlib import Path

from bench.leaderboard.data import Results
from bench.leaderboard.sections import REFERENCE_ATTACK, REFERENCE_DEFENSE, Section, Stat

FULL_SCALE = {"cifar10": 50_000, "cifar100": 50_000, "svhn": 73_257}
"""Training images of the full datasets the papers report on."""


def _cell(st: Stat | None, peak: bool = False) -> str:
    if st is None:
        return "—"
    mean, sd = (st.peak_mean, st.peak_std) if peak else (st.mean, st.std)
    return f"{mean:.1f} ({st.n})" if sd is None else f"{mean:.1f} ± {sd:.1f} ({st.n})"


def _esc(text: str) -> str:
    return str(text).replace("|", "\\|")


def _table(header: list[str], rows: list[list[str]], align: str = "r") -> list[str]:
    out = ["| " + " | ".join(_esc(h) for h in header) + " |", "|" + "|".join([":---"] + [("---:" if align == "r" else ":---")] * (len(header) - 1)) + "|"]
    out += ["| " + " | ".join(_esc(c) for c in r) + " |" for r in rows]
    return out


def _label(s: Section, name: str) -> str:
    return f"{name} {s.marks[name]}" if name in s.marks else name


def banner(s: Section) -> str:
    ref = s.reference
    clean = f"clean reference (`none` / `standard`) {ref.mean:.1f} %" if ref else "no clean reference"
    full = FULL_SCALE.get(s.dataset.split("{")[0].removesuffix("-mini"))
    scale = f"**Scale:** {s.n_pool:,} train / {s.n_test:,} test images, {s.epochs} epochs, `{s.arch}`; {clean}."
    if full and s.n_pool < full:
        scale += (f" Reduced scale ({s.n_pool / full:.0%} of the {full:,} training images the papers use, fewer epochs): "
                  "read orderings and gaps, not the papers' absolute numbers.")
    return scale


def section_md(s: Section, plots: dict[str, str]) -> list[str]:
    out = [f"## {s.dataset} · {s.arch} · {s.epochs} epochs{s.title_suffix}", "", f"> {banner(s)}"]
    for w in s.warnings:
        out.append(f"> ⚠ {w}")
    links = ", ".join(f"[{m}](configs/{m}.yaml)" if Path("configs", f"{m}.yaml").exists() else f"`{m}`" for m in s.matrices)
    src = f" Poisons optimized on: {', '.join(f'`{x}`' for x in s.sources)}." if s.sources else ""
    out += ["", f"From {links}.{src}", ""]
    header = ["attack \\ defense", *[_label(s, d) for d in s.defenses], "worst case"]
    rows = []
    for a in s.attacks:
        w = s.worst.get(a)
        rows.append([_label(s, a), *[_cell(s.grid.get((a, d))) for d in s.defenses], f"{w[0]:.1f} ({w[1]})" if w else "—"])
    out += ["**Final clean test accuracy (%)**, mean ± std (runs); lower = stronger attack. *Worst case*: the best any defense recovers.", ""]
    out += [*_table(header, rows), ""]
    if s.ranking:
        out += ["**Attacks ranked by their worst case** (lowest first: the strongest attack survives its best defense best)", ""]
        n = len(s.defenses)
        out += _table(["rank", "attack", "worst case (%)", "recovered by", "defenses run"],
                      [[str(r), _label(s, a), f"{acc:.1f}", d, f"{s.faced[a]} of {n}"] for r, a, acc, d in s.ranking]) + [""]
        if any(s.faced[a] < n for _, a, _, _ in s.ranking):
            out += ["An attack run against fewer of this section's defenses is ranked on those alone: each defense "
                    "not yet run against it can only raise its worst case.", ""]
        if s.shared_ranking:
            names = ", ".join(_label(s, d) for d in s.shared)
            out += [f"**Ranked on the defenses they all faced** ({names}): the {len(s.shared_ranking)} attacks run against every one of "
                    "them, each worst case taken over the same set", ""]
            out += _table(["rank", "attack", "worst case (%)", "recovered by"],
                          [[str(r), _label(s, a), f"{acc:.1f}", d] for r, a, acc, d in s.shared_ranking]) + [""]
    ref_def = s.costs.get(REFERENCE_DEFENSE)
    cost_rows = []
    for d in s.defenses:
        c = s.costs[d]
        cost_rows.append([
            _label(s, d),
            "—" if c["clean"] is None else f"{c['clean']:.1f}",
            "—" if c["clean_cost"] is None else f"{c['clean_cost']:+.1f}",
            f"{c['declared']:g}",
            "—" if c["time"] is None else f"{c['time']:.2f}×",
        ])
    if ref_def is not None and len(s.defenses) > 1:
        out += ["**What each defense costs**: clean accuracy and its loss against standard training (points), "
                "declared passes per step, measured training time per image", ""]
        out += _table(["defense", "clean acc.", "clean cost", "passes/step", "time vs standard"], cost_rows) + [""]
    out += ["**Peak clean test accuracy (%)** (best evaluated epoch)", ""]
    peak = [[_label(s, a), *[_cell(s.grid.get((a, d)), peak=True) for d in s.defenses]] for a in s.attacks]
    out += _table(["attack \\ defense", *[_label(s, d) for d in s.defenses]], peak) + [""]
    if s.robust:
        rob = [[_label(s, a), *[_rob(s.robust.get((a, d))) for d in s.defenses]] for a in s.attacks if any((a, d) in s.robust for d in s.defenses)]
        out += ["**Robust accuracy (%)**, FGSM / PGD-20 at 8/255 on clean test images", "", *_table(["attack \\ defense", *s.defenses], rob), ""]
    if s.partial:
        ratios = sorted({r for _, r in s.partial})
        labels = sorted({a for a, _ in s.partial}, key=lambda x: (x == "clean-only", x))
        prow = [[a, *[_cell(s.partial.get((a, r))) for r in ratios], _cell(s.grid.get((a, REFERENCE_DEFENSE)))] for a in labels]
        out += ["**Partial poisoning** (standard training): poisoned share of the training set; `clean-only` trains on the unpoisoned part alone", ""]
        out += _table(["attack \\ poisoned", *[f"{r:.0%}" for r in ratios], "100%"], prow) + [""]
    if s.hidden_params:
        out += ["**Params behind the labels**", "", *_table(["label", "non-default params"], [[k, v] for k, v in sorted(s.hidden_params.items())], "l"), ""]
    for note in s.notes:
        out.append(f"<sub>{note}</sub>  ")
    if s.notes:
        out.append("")
    if plots:
        out += [" · ".join(f"[{name}]({path})" for name, path in plots.items()), ""]
        if "heatmap" in plots:
            out += [f"![{s.slug} heatmap]({plots['heatmap']})", ""]
    return out


def _rob(v) -> str:
    if v is None:
        return "—"
    f, p = v
    return f"{'—' if f is None else f'{f:.1f}'} / {'—' if p is None else f'{p:.1f}'}"


def transfer_md(sections: list[Section]) -> list[str]:
    """Source × target tables, per budget, where poisons made on several sources were trained on several targets."""
    by_budget: dict[tuple, list[Section]] = {}
    for s in sections:
        by_budget.setdefault((s.dataset, s.n_pool, s.n_test, s.epochs, s.train, s.subset), []).append(s)
    out = []
    for key, secs in sorted(by_budget.items()):
        archs = sorted(s.arch for s in secs)
        sourced = sorted({a for s in secs for a in s.attacks if "source_arch=" in a or "@" in a})
        if len(archs) < 2 or not sourced:
            continue
        grid = {(a, s.arch): s.grid.get((a, REFERENCE_DEFENSE)) for s in secs for a in s.attacks}
        rows = [[a, *[_cell(grid.get((a, t))) for t in archs]] for a in [REFERENCE_ATTACK, *sourced]]
        draw = f" · subset {key[5]}" if key[5] else ""
        out += [f"## Transfer · {key[0]} · {key[3]} epochs{draw}", "",
                "Standard training of each target arch (columns) on poisons made on each source (rows).", ""]
        out += _table(["poison (source) \\ target", *archs], rows) + [""]
    return out


def footer(res: Results) -> list[str]:
    ok = res.ok
    out = ["## Where these numbers come from", ""]
    out.append(f"Result files: {', '.join(f'[{f}](results/{f})' for f in res.files) or '—'}.")
    if not ok.empty:
        commits = sorted(set(ok["git_commit"]))
        out.append(f"uebench {', '.join(sorted(set(ok['uebench_version'])))}; code {', '.join(f'`{c}`' for c in commits)}; "
                   f"torch {', '.join(sorted(set(ok['torch_version'])))}; timm {', '.join(sorted(set(ok['timm_version'])))}.")
        out.append(f"Devices: {', '.join(f'`{d}`' for d in sorted(set(ok['device'])))}.")
    return out + [""]


def markdown(res: Results, sections: list[Section], plots: dict[str, dict[str, str]]) -> str:
    out = [
        "# uebench leaderboard",
        "",
        "<!-- Generated by `uebench leaderboard` from results/*.csv. Do not edit by hand. -->",
        "",
        "Clean test accuracy (%) of an exploiter trained on the published (poisoned) data: lower means a stronger "
        "attack, higher a stronger defense. Each cell is the mean ± std over seeds, with the number of runs; a run "
        "that several matrices recorded counts once. `none` is the clean reference.",
        "",
    ]
    n = len(res.ok)
    summary = f"{n} runs from {res.ok['matrix'].nunique() if n else 0} matrices"
    extras = [f"{res.failed} failed runs not shown" for _ in [0] if res.failed]
    extras += [f"{res.duplicates} duplicate records counted once" for _ in [0] if res.duplicates]
    out += [summary + (f"; {'; '.join(extras)}." if extras else "."), ""]
    if not n:
        return "\n".join(out + ["_No results yet: run `uebench run CONFIG`._"]) + "\n"
    if len(sections) > 1:
        out += ["Sections: " + " · ".join(f"[{s.dataset} · {s.arch} · {s.epochs} epochs{s.title_suffix}](#{_anchor(s)})" for s in sections), ""]
    for s in sections:
        out += section_md(s, plots.get(s.slug, {}))
    out += transfer_md(sections)
    out += footer(res)
    return "\n".join(out).rstrip("\n") + "\n"


def _anchor(s: Section) -> str:
    import re

    title = f"{s.dataset} · {s.arch} · {s.epochs} epochs{s.title_suffix}".lower()
    return re.sub(r"[^\w\- ]", "", title).replace(" ", "-")


TIDY_COLUMNS = [
    "dataset", "subset", "arch", "n_train", "n_test", "epochs", "train", "attack", "defense", "runs", "final_mean", "final_std",
    "peak_mean", "peak_std", "robust_fgsm", "robust_pgd20", "worst_case", "worst_case_defense", "rank",
    "defenses_run", "shared_rank", "shared_worst_case",
]


def tidy_csv(sections: list[Section]) -> str:
    """One row per section × attack × defense (the numbers of leaderboard.md, machine-readable)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(TIDY_COLUMNS)
    f = lambda v: "" if v is None else f"{v:.4f}"
    for s in sections:
        rank = {a: r for r, a, _, _ in s.ranking}
        shared = {a: (r, acc) for r, a, acc, _ in s.shared_ranking}
        for a in s.attacks:
            for d in s.defenses:
                st = s.grid.get((a, d))
                if st is None:
                    continue
                rob = s.robust.get((a, d), (None, None))
                worst = s.worst.get(a, (None, ""))
                w.writerow([s.dataset, s.subset, s.arch, s.n_pool, s.n_test, s.epochs, s.train, a, d, st.n, f(st.mean), f(st.std),
                            f(st.peak_mean), f(st.peak_std), f(rob[0]), f(rob[1]), f(worst[0]), worst[1], rank.get(a, ""),
                            s.faced.get(a, 0), shared.get(a, ("", None))[0], f(shared.get(a, ("", None))[1])])
    return buf.getvalue()
