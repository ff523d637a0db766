"""The README's column table is generated from ResultRow, so the two cannot drift apart."""
from pathlib import Path

from bench.results import schema_markdown


def test_readme_schema_matches_result_row():
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = text.split("<!-- schema:start -->\n")[1].split("\n<!-- schema:end -->")[0]
    assert block == schema_markdown(), "regenerate with: python -c 'from bench.results import schema_markdown; print(schema_markdown())'"
