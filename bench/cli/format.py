"""Text the CLI prints about a run: the dry-run report and the final summary."""
from __future__ import annotations

from pathlib import Path

from bench.scheduler import RunSummary
from bench.status import PlanStatus


def format_status(st: PlanStatus, cache_dir: Path, results_dir: Path) -> str:
    """The dry-run report: cells total / done / failed / to compute; poisons cached / to generate."""
    m = st.plan.matrix
    picked = "" if len(st.selected) == len(st.plan.cells) else f" ({len(st.selected)} selected by --only)"
    lines = [
        f"matrix {m.name}: {len(st.plan.cells)} cells{picked}: {len(st.done)} done, "
        + (f"{len(st.failed)} failed (skipped; --retry-failed reruns them), " if st.failed else "")
        + f"{len(st.todo)} to compute",
        f"poisons needed by them: {len(st.poisons)}: {len(st.cached)} cached, {len(st.to_generate)} to generate"
        + (f" ({len(st.regenerate)} regenerated)" if st.regenerate else ""),
    ]
    if st.baselines:
        lines.append(f"clean-only baselines: {st.baselines} (no poison to generate)")
    for p in st.to_generate:
        src = p.attack.params.get("source_arch")
        lines.append(f"  generate: {p.label} · {p.dataset.name} · seed {p.seed}" + (f" · source {src}" if src else ""))
    lines.append(f"results: {Path(results_dir) / (m.name + '.csv')}")
    lines.append(f"cache: {cache_dir}")
    return "\n".join(lines)


def format_summary(s: RunSummary) -> str:
    """The final summary table of a run."""
    rows = [
        ("cells", s.total),
        ("  already done", s.skipped),
        ("  failed before, skipped", len(s.skipped_failed)),
        ("  done by a concurrent run", s.elsewhere),
        ("  trained ok", s.ok),
        ("  failed", s.failed),
        ("poisons needed", s.poisons_needed),
        ("  generated", s.poisons_generated),
        ("  from cache", s.poisons_cached),
        ("  failed", s.poisons_failed),
    ]
    width = max(len(k) for k, _ in rows)
    out = [f"{k:<{width}}  {v:>6}" for k, v in rows]
    out.append(f"{'wall time':<{width}}  {s.seconds:>5.0f}s" + (f"  ({s.executor})" if s.executor else ""))
    return "\n".join(out)
