"""What one leaderboard section says: a dataset × training budget × exploiter arch, with its
attack × defense grid, each attack's worst case and rank, each defense's costs, its scale,
its warnings and its marks.

The **worst case** of an attack is the best final clean accuracy any defense of the section
recovers against it (mean over seeds), with that defense: the answer to "does my attack
survive every defense?". Attacks are **ranked** by it, lowest first (the strongest attack
is the one whose best defense recovers least). A section can join several matrices, so not
every attack faced every defense: the ranking says over how many each worst case was taken,
since one more defense can only raise it. Where attacks faced different defenses, a second
ranking is taken over a **shared set**: the defenses every attack it ranks faced, chosen to
cover the most attack × defense cells (`shared_defenses`), so that no attack in it is ranked
on fewer defenses than another. A defense's **clean cost** is what it takes
from clean data: standard training's accuracy on the clean reference minus its own.
"""
from __future__ import annotations

import json
import re
import statistics
from dataclasses import dataclass, field

import pandas as pd

from bench.leaderboard.data import CLEAN_ONLY, GROUP, _json

REFERENCE_ATTACK, REFERENCE_DEFENSE = "none", "standard"
SECTION_KEY = [*GROUP, "arch"]
"""What makes a section: a training budget and the exploiter's arch."""
NEAR_CHANCE = 2.0
"""A clean reference below this many times chance accuracy is flagged: training too weak to mean much."""


@dataclass(frozen=True)
class Stat:
    n: int
    mean: float
    std: float | None
    peak_mean: float
    peak_std: float | None

    @classmethod
    def of(cls, final: list[float], peak: list[float]) -> "Stat":
        sd = lambda v: statistics.stdev(v) if len(v) > 1 else None
        return cls(len(final), statistics.fmean(final), sd(final), statistics.fmean(peak), sd(peak))


@dataclass
class Section:
    dataset: str
    arch: str
    n_pool: int
    n_test: int
    epochs: int
    train: str  # short hash of the training settings
    train_config: dict
    classes: int
    matrices: list[str]
    attacks: list[str]
    defenses: list[str]
    grid: dict[tuple[str, str], Stat]
    robust: dict[tuple[str, str], tuple[float | None, float | None]]
    worst: dict[str, tuple[float, str]]
    faced: dict[str, int]  # attack -> how many of the section's defenses it was run against
    ranking: list[tuple[int, str, float, str]]
    costs: dict[str, dict]
    partial: dict[tuple[str, float], Stat]
    shared: tuple[str, ...] = ()  # the shared defense set (empty: every ranked attack faced every defense, or no set fits)
    shared_ranking: list[tuple[int, str, float, str]] = field(default_factory=list)
    marks: dict[str, str] = field(default_factory=dict)  # label -> mark shown next to it
    notes: list[str] = field(default_factory=list)  # what each mark means
    hidden_params: dict[str, str] = field(default_factory=dict)  # label -> its non-default params
    warnings: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    title_suffix: str = ""
    subset: int = 0  # the dataset's draw (subset_seed); 0 is the default draw
    key: tuple = ()  # its values of SECTION_KEY: what selects its rows

    def rows(self, ok: pd.DataFrame) -> pd.DataFrame:
        """This section's rows of ``ok``: the same budget (every field of GROUP) and arch. The
        figures select with this too, so a figure never draws a row its section does not hold."""
        return select(ok, self.key)

    @property
    def slug(self) -> str:
        draw = f"-s{self.subset}" if self.subset else ""
        base = f"{self.dataset}{draw}-{self.arch}-{self.n_pool}-{self.epochs}ep-{self.train}"
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", base)

    @property
    def reference(self) -> Stat | None:
        return self.grid.get((REFERENCE_ATTACK, REFERENCE_DEFENSE))


def select(ok: pd.DataFrame, key: tuple) -> pd.DataFrame:
    """The rows of ``ok`` whose SECTION_KEY fields equal ``key``."""
    return ok[(ok[SECTION_KEY] == pd.Series(dict(zip(SECTION_KEY, key)))).all(axis=1)]


def _order(labels, first: str) -> list[str]:
    return sorted(set(labels), key=lambda s: (not s.startswith(first), s))


def _defaults(kind: str, name: str) -> dict | None:
    """A registered plugin's default params (None if it is not installed here)."""
    from registry import ATTACKS, DEFENSES, RegistryError

    reg = ATTACKS if kind == "attack" else DEFENSES
    try:
        return reg.get(name).defaults()
    except RegistryError:
        return None


def _hidden(label: str, name: str, params_json: str, kind: str) -> str | None:
    """The non-default params a label does not show (None if it shows them all)."""
    if "[" in label:  # uebench's own labels spell out every non-default param
        return None
    params = _json(params_json) if kind == "attack" else {}
    if kind == "defense":
        params = {}
        for d in json.loads(params_json or "[]"):
            defaults = _defaults("defense", d["name"]) or {}
            params.update({f"{d['name']}.{k}": v for k, v in d["params"].items() if defaults.get(k, object()) != v})
        return ", ".join(f"{k}={v}" for k, v in sorted(params.items())) or None
    defaults = _defaults("attack", name)
    diff = {k: v for k, v in params.items() if defaults is None or defaults.get(k, object()) != v}
    return ", ".join(f"{k}={json.dumps(v, sort_keys=True)}" for k, v in sorted(diff.items())) or None


def _defense_marks(sec: pd.DataFrame) -> tuple[dict[str, str], list[str]]:
    marks, notes = {}, []
    for label, grp in sec.groupby("defense"):
        reports = [_json(r) for r in grp["defense_report"]]
        st = [r["st"] for r in reports if isinstance(r.get("st"), dict)]
        if any(s.get("reconstruction") for s in st):
            calibrated = all(s.get("calibration") for s in st)
            marks[label] = "‡" if calibrated else "‡⁰"
    if "‡" in marks.values():
        notes.append("‡ reconstruction: the paper's formula and thresholds were lost; uebench runs its documented reconstruction (docs/algorithms/staged.md)")
    if "‡⁰" in marks.values():
        notes.append("‡⁰ reconstruction, not calibrated: its thresholds are defaults, not tuned as the paper tunes them")
    return marks, notes


def make_section(sec: pd.DataFrame, budget: dict, arch: str) -> Section:
    main = sec[(sec["poison_ratio"] == 1.0) & (sec["attack_name"] != CLEAN_ONLY)]
    partial_rows = sec[(sec["poison_ratio"] < 1.0) | (sec["attack_name"] == CLEAN_ONLY)]
    grid = {
        (a, d): Stat.of(list(g["clean_acc_final"]), list(g["clean_acc_peak"]))
        for (a, d), g in main.groupby(["attack", "defense"])
    }
    robust = {}
    for (a, d), g in main.groupby(["attack", "defense"]):
        fgsm, pgd = g["robust_acc_fgsm"].dropna(), g["robust_acc_pgd20"].dropna()
        if len(fgsm) or len(pgd):
            robust[(a, d)] = (fgsm.mean() if len(fgsm) else None, pgd.mean() if len(pgd) else None)
    attacks = _order(main["attack"], REFERENCE_ATTACK)
    defenses = _order(main["defense"], REFERENCE_DEFENSE)
    faced = {a: sum((a, d) in grid for d in defenses) for a in attacks}
    worst = {a: w for a in attacks if (w := _worst(grid, a, defenses)) is not None}
    ranking = _rank(grid, [a for a in worst if a != REFERENCE_ATTACK], defenses)
    shared = shared_defenses(grid, [a for _, a, _, _ in ranking], defenses)
    shared_ranking = _rank(grid, [a for _, a, _, _ in ranking if all((a, d) in grid for d in shared)], shared) if shared else []
    costs = _costs(main, grid, defenses)
    partial = {
        (a, float(r)): Stat.of(list(g["clean_acc_final"]), list(g["clean_acc_peak"]))
        for (a, r), g in partial_rows[partial_rows["defense"] == REFERENCE_DEFENSE].groupby(["attack", "poison_ratio"])
    }
    s = Section(
        dataset=budget["dataset"], arch=arch, n_pool=int(budget["n_pool"]), n_test=int(budget["n_test"]),
        epochs=int(budget["epochs"]), train=budget["train"], train_config=_json(sec["train_config"].iloc[0]),
        classes=int(sec["classes"].iloc[0]), matrices=sorted(set(sec["matrix"])), attacks=attacks, defenses=defenses,
        grid=grid, robust=robust, worst=worst, faced=faced, ranking=ranking, costs=costs, partial=partial,
        shared=shared, shared_ranking=shared_ranking,
        sources=sorted(set(sec["source_arch"]) - {""}), subset=int(budget["subset"]),
    )
    s.marks, s.notes = _defense_marks(main)
    for kind, col, name_col, params in (("attack", "attack", "attack_name", "attack_params"), ("defense", "defense", "defense", "defense_params")):
        for label, g in main.groupby(col):
            hidden = _hidden(label, g[name_col].iloc[0], g[params].iloc[0], kind)
            if hidden:
                s.hidden_params[label] = hidden
                s.marks[label] = s.marks.get(label, "") + "†"
    if s.hidden_params:
        s.notes.append("† the label does not show all its params: see *Params behind the labels* below")
    s.warnings = _warnings(s, main)
    return s


def _worst(grid: dict, attack: str, defenses) -> tuple[float, str] | None:
    """The attack's worst case over ``defenses``: the best mean any of them it faced recovers,
    with that defense (ties to the later name); None if it faced none of them."""
    cells = [(grid[(attack, d)].mean, d) for d in defenses if (attack, d) in grid]
    return max(cells) if cells else None


def _rank(grid: dict, attacks: list[str], defenses) -> list[tuple[int, str, float, str]]:
    """(rank, attack, worst case, the defense that gives it) over ``defenses``, lowest first;
    an attack is ranked on the defenses of ``defenses`` it faced."""
    worst = [(w[0], a, w[1]) for a in attacks if (w := _worst(grid, a, defenses)) is not None]
    return [(i + 1, a, acc, d) for i, (acc, a, d) in enumerate(sorted(worst, key=lambda t: (t[0], t[1])))]


def shared_defenses(grid: dict, attacks: list[str], defenses: list[str]) -> tuple[str, ...]:
    """The defense set a fair ranking of ``attacks`` is taken over: among the sets of defenses
    some attack faced (and the pairwise overlaps of those sets), the one that, with every
    attack that faced all of it, covers the most cells; at least two defenses and two attacks.
    Empty when every attack faced every defense (the full ranking is already fair) or when no
    set fits. Ties go to more attacks, then to the alphabetically first set."""
    faced = {a: frozenset(d for d in defenses if (a, d) in grid) for a in attacks}
    if len(set(faced.values())) <= 1:
        return ()
    sets = set(faced.values())
    candidates = sets | {x & y for x in sets for y in sets}
    best, best_key = (), (0, 0)
    for cand in sorted(candidates, key=lambda c: sorted(c)):
        n = sum(1 for f in faced.values() if cand <= f)
        key = (len(cand) * n, n)
        if len(cand) >= 2 and n >= 2 and key > best_key:
            best, best_key = tuple(d for d in defenses if d in cand), key
    return best


def _costs(main: pd.DataFrame, grid: dict, defenses: list[str]) -> dict[str, dict]:
    """Per defense: its clean accuracy and cost, declared passes per step, measured time per
    training image relative to standard training (same section)."""
    ref = grid.get((REFERENCE_ATTACK, REFERENCE_DEFENSE))
    per_image = {d: (g["train_seconds"] / g["n_train"]).mean() for d, g in main.groupby("defense") if g["train_seconds"].notna().any()}
    out = {}
    for d in defenses:
        clean = grid.get((REFERENCE_ATTACK, d))
        g = main[main["defense"] == d]
        out[d] = {
            "clean": clean.mean if clean else None,
            "clean_cost": (ref.mean - clean.mean) if clean and ref else None,
            "declared": float(g["defense_cost"].iloc[0]),
            "time": per_image[d] / per_image[REFERENCE_DEFENSE] if d in per_image and REFERENCE_DEFENSE in per_image else None,
        }
    return out


def _warnings(s: Section, main: pd.DataFrame) -> list[str]:
    out = []
    chance = 100.0 / s.classes
    ref = s.reference
    if ref is None:
        out.append("no clean reference (attack `none` under `standard`): nothing here says how much an attack took")
    elif ref.mean < NEAR_CHANCE * chance:
        out.append(
            f"the clean reference ({ref.mean:.1f} %) is near chance ({chance:.0f} %): the exploiter learns too little at this "
            "scale for the numbers to mean anything"
        )
    unconverged = sorted({f"{a} (seed {sd})" for a, sd, c in zip(main["attack"], main["seed"], main["converged"]) if c is False})
    if unconverged:
        out.append(f"poisons that stopped before their stop criterion: {', '.join(unconverged)}")
    dirty = int(main["dirty"].sum())
    if dirty:
        out.append(f"{dirty} runs come from a modified checkout (git_commit ends in -dirty)")
    return out


def sections(ok: pd.DataFrame) -> list[Section]:
    """Every section, in a stable order; a budget's title gets its settings' hash when two
    budgets would otherwise read alike."""
    out = []
    keys = sorted(ok.groupby(SECTION_KEY).groups)
    but_train = lambda key: tuple(v for f, v in zip(SECTION_KEY, key) if f != "train")
    alike: dict[tuple, int] = {}
    for key in keys:
        alike[but_train(key)] = alike.get(but_train(key), 0) + 1
    for key in keys:
        budget = dict(zip(GROUP, key[:-1]))
        s = make_section(select(ok, key), budget, key[-1])
        s.key = key
        if s.subset:
            s.title_suffix += f" · subset {s.subset}"
        if alike[but_train(key)] > 1:
            s.title_suffix += f" · train #{budget['train']}"
        out.append(s)
    return out
