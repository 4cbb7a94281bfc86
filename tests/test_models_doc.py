"""docs/models.md's table is the registry's: regenerate it with the command the doc shows."""

from __future__ import annotations

from pathlib import Path

from poolkit.cli import models_markdown
from poolkit.registry import get_host

DOC = Path(__file__).parent.parent / "docs" / "models.md"


def test_models_table_is_generated_from_the_registry(fresh_host, monkeypatch):
    monkeypatch.setenv("POOLKIT_PLUGINS", "builtin_models")
    text = DOC.read_text()
    table = text.split("<!-- models table: start -->\n")[1].split("<!-- models table: end -->")[0]
    assert table == models_markdown(), "docs/models.md is stale: POOLKIT_PLUGINS=builtin_models poolkit models"
    for arch in get_host().registry("architectures").names():
        assert f" {arch} |" in table or f"({arch})" in table
