"""The docs say what the code does: generated blocks are current, every plugin is in the
algorithms account, the README's commands exist."""
from __future__ import annotations

import re
import subprocess
import sys

from conftest import REPO

from registry import ATTACKS, DEFENSES


def test_generated_blocks_are_current():
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "update_docs.py"), "--check"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_every_plugin_is_described_in_the_algorithms_account():
    text = "\n".join(p.read_text() for p in (REPO / "docs" / "algorithms").glob("*.md"))
    missing = [n for n in ATTACKS.list() + DEFENSES.list() if f"`{n}`" not in text]
    assert missing == [], "add these plugins to docs/algorithms/"


def test_docs_links_resolve():
    """Every relative link in README.md and docs/ points to a file of the repository."""
    broken = []
    for md in [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md")), *sorted(REPO.glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", md.read_text()):
            if "://" in target or target.startswith("mailto:"):
                continue
            if not (md.parent / target).exists():
                broken.append(f"{md.relative_to(REPO)} -> {target}")
    assert broken == []
