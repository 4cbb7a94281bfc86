"""Every ```python block of docs/*.md and README.md runs, so the docs cannot rot.

Each block runs in a fresh namespace, in an empty temporary working directory, with a freshly
loaded plugin host. Blocks fenced with another language (```bash, ```text, ```toml) are not run.
A fenced block indented inside a list item is dedented first.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from poolkit.registry import reset_host

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]
FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[\w+-]*)\s*$")


def code_blocks(path: Path) -> list[tuple[int, str, str]]:
    """``(line, language, code)`` of each fenced block, in order; ``line`` is the opening fence's (1-based)."""
    blocks, lines, i = [], path.read_text(encoding="utf-8").splitlines(), 0
    while i < len(lines):
        start = FENCE.match(lines[i])
        if not start:
            i += 1
            continue
        body, j = [], i + 1
        while j < len(lines) and not (FENCE.match(lines[j]) and lines[j].strip() == "```"):
            body.append(lines[j])
            j += 1
        if j == len(lines):
            raise ValueError(f"{path.name}:{i + 1}: unclosed code fence")
        blocks.append((i + 1, start["lang"].lower(), textwrap.dedent("\n".join(body))))
        i = j + 1
    return blocks


PYTHON_BLOCKS = [pytest.param(path, line, code, id=f"{path.name}:{line}")
                 for path in DOCS for line, lang, code in code_blocks(path) if lang in ("python", "py")]


def test_docs_have_python_blocks():
    names = {p.values[0].name for p in PYTHON_BLOCKS}
    assert {"plugins.md", "architecture.md", "configuration.md", "README.md"} <= names


def test_fence_parser(tmp_path):
    doc = tmp_path / "x.md"
    doc.write_text("text\n```python\nx = 1\n```\n\n1. item\n\n   ```python\n   y = 2\n   ```\n```bash\nls\n```\n")
    assert code_blocks(doc) == [(2, "python", "x = 1"), (8, "python", "y = 2"), (11, "bash", "ls")]


@pytest.mark.parametrize("path, line, code", PYTHON_BLOCKS)
def test_python_block_runs(path, line, code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    reset_host()
    try:
        exec(compile(code, f"{path.relative_to(ROOT)}:{line}", "exec"), {"__name__": "__docs__"})  # noqa: S102
    finally:
        reset_host()


def test_serving_openapi_path_list_is_the_apps():
    """docs/serving.md's ``/openapi.json`` path list is the one the server's app publishes."""
    import ast

    from poolkit.server.app import create_app
    from poolkit.server.engine_loop import EngineLoop

    blocks = code_blocks(ROOT / "docs" / "serving.md")
    [i] = [k for k, (_, lang, code) in enumerate(blocks) if lang == "bash" and "/openapi.json" in code]
    documented = ast.literal_eval(blocks[i + 1][2].strip())
    app = create_app(lambda: {}, engine_loop=EngineLoop(), background_load=True)
    assert documented == sorted(app.openapi()["paths"])
