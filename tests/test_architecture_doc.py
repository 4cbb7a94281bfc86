"""docs/architecture.md's file map and counts are checked against the tree, as docs/models.md is generated:
a module added, moved or deleted without the map following fails here."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "architecture.md"
SOURCE_DIRS = ("core", "registry", "builtin_models", "builtin_poolers", "io_plugins")
DIR_ENTRY = re.compile(r"\s*(\w+(?:/\w+)*/)(?=\s|$)")
MODULE = re.compile(r"(?<![\w/.])(\w+(?:/\w+)*\.py)\b")


def file_map() -> str:
    text = DOC.read_text()
    section = text[text.index("## Where everything lives"):]
    return section[section.index("```text") + len("```text"):].split("```", 1)[0]


def mapped_paths(block: str) -> set[str]:
    """Every ``.py`` path the map names, under the directory entry it is indented beneath."""
    stack: list[tuple[int, str]] = []
    found = set()
    for line in block.splitlines():
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        entry = DIR_ENTRY.match(line)
        if entry or indent < 30:  # a continuation line (the description column) keeps its directory
            while stack and stack[-1][0] >= indent:
                stack.pop()
        base = stack[-1][1] if stack else ""
        if entry:
            base += entry.group(1)
            stack.append((indent, base))
            line = line[entry.end():]
        found.update(base + name for name in MODULE.findall(line))
    return found


def source_paths() -> set[str]:
    return {str(p.relative_to(ROOT)) for d in SOURCE_DIRS for p in (ROOT / d).rglob("*.py")
            if "__pycache__" not in p.parts and p.name != "__init__.py"}


def test_the_file_map_names_every_module_and_only_modules_that_exist():
    mapped = mapped_paths(file_map())
    assert sorted(source_paths() - mapped) == [], "modules the map leaves out"
    assert sorted(p for p in mapped if not (ROOT / p).is_file()) == [], "the map names files that do not exist"


def test_the_map_reader_places_names_under_their_directories():
    block = ("core/    poolkit\n  a.py   x (b.py: y)\n  sub/   z\n    c.py, d.py   w\n"
             "                               e.py (more of sub/)\n  f.py   v\nreg/     r.py\n")
    assert mapped_paths(block) == {"core/a.py", "core/b.py", "core/sub/c.py", "core/sub/d.py", "core/sub/e.py",
                                   "core/f.py", "reg/r.py"}


def test_the_architecture_count_is_the_registry_s():
    from poolkit.builtin_models import ARCHITECTURES

    native = sum(1 for name in ARCHITECTURES if name != "TransformersFallback")
    assert f"register_architectures: {native} native + TransformersFallback" in DOC.read_text()
