"""docs/configuration.md's tables are generated from the settings table and kept current."""

from __future__ import annotations

from pathlib import Path

from vdm.settings_docs import render, tables
from vdm.settings_table import SETTINGS

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_the_committed_tables_are_the_generated_ones() -> None:
    page = DOC.read_text()
    assert render(page) == page, "run: python -m vdm.settings_docs"


def test_the_page_holds_every_table_and_names_every_key_and_variable() -> None:
    page = DOC.read_text()
    for name in tables():
        assert f"<!-- generated: {name} -->" in page, name
    for row in SETTINGS:
        assert (row.key is None or f"`{row.key}`" in page) and (
            row.env is None or f"`{row.env}`" in page
        ), row.path


def test_a_stale_table_is_rewritten_and_the_prose_kept() -> None:
    page = "prose before\n<!-- generated: cache -->\n| old |\n<!-- end generated -->\nafter\n"
    fresh = render(page)
    assert fresh.startswith("prose before\n") and fresh.endswith("after\n")
    assert "| old |" not in fresh and "`CACHE_MAX_TTL`" in fresh
