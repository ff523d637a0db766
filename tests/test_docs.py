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


def _readme_commands() -> list[list[str]]:
    import shlex

    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    cmds = []
    for block in blocks:
        for line in block.splitlines():
            line = line.split("#", 1)[0].strip()
            for part in re.split(r"&&|\s\|\s", line):
                words = shlex.split(part.replace(".venv/bin/", ""))
                if words and words[0] == "uebench":
                    cmds.append(words)
    return cmds


def test_the_readme_commands_exist_with_the_options_they_use():
    """Every `uebench ...` in the README names a real command, and every --option it uses
    is one that command takes (the commands themselves run in the other tests)."""
    from click.testing import CliRunner

    from bench.cli import main

    cmds = _readme_commands()
    assert len(cmds) > 15
    for words in cmds:
        path = [w for w in words[1:3] if re.fullmatch(r"[a-z][a-z0-9-]*", w)]  # command names, not CONFIG or FILE
        sub = path[:2] if path[:1] in (["cache"], ["show"], ["export"]) else path[:1]
        res = CliRunner().invoke(main, [*sub, "--help"])
        assert res.exit_code == 0, (words, res.output)
        for opt in [w.split("=")[0] for w in words if w.startswith("--")]:
            assert opt in res.output, (words, opt)
