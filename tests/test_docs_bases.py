"""Issue 22: every class docs/plugins.md tells plugin authors to subclass is importable from a public module.

The prose names a base as ``subclass `X` `` / `` `X` subclass`` (a bare name is one of ``poolkit``'s exports);
the code blocks' classes name their bases through the block's own imports. Each must import from a module
path with no private (``_``) part, and be a class.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import re
from pathlib import Path

from test_docs import code_blocks

DOC = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"
PROSE = (re.compile(r"subclass(?:es|ing)?\s+(?:of\s+)?(?:\*\*)?`([^`]+)`"), re.compile(r"`([^`]+)`(?:\*\*)?\s+subclass\b"))


def _resolve(dotted: str) -> object:
    """``poolkit.pooling.MeanPool`` -> the class, importing the longest module prefix; a bare name from ``poolkit``."""
    parts = dotted.split(".") if "." in dotted else ["poolkit", dotted]
    assert not any(p.startswith("_") for p in parts), f"{dotted}: a private module or name"
    for cut in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            obj = getattr(obj, name)
        return obj
    raise ImportError(dotted)


def prose_bases() -> set[str]:
    text = DOC.read_text(encoding="utf-8")
    names = {m.group(1).split("[")[0] for pattern in PROSE for m in pattern.finditer(text)}
    return {n for n in names if not hasattr(builtins, n)}


def code_bases() -> set[str]:
    """Dotted homes of the bases of every class defined in the doc's python blocks."""
    found = set()
    for _, lang, code in code_blocks(DOC):
        if lang not in ("python", "py"):
            continue
        tree = ast.parse(code)
        imported = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported.update({a.asname or a.name: f"{node.module}.{a.name}" for a in node.names})
            elif isinstance(node, ast.Import):
                imported.update({a.asname or a.name: a.name for a in node.names})
        defined = {n.name for n in ast.walk(tree) if isinstance(n, ast.ClassDef)}
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                for base in node.bases:
                    base = base.value if isinstance(base, ast.Subscript) else base
                    text = ast.unparse(base)
                    head, _, rest = text.partition(".")
                    if head in defined or head not in imported:
                        continue
                    found.add(imported[head] + ("." + rest if rest else ""))
    return found


def test_every_base_the_docs_name_is_public():
    names = prose_bases() | code_bases()
    assert {"poolkit.PoolingMethod", "poolkit.pooling.MeanPool", "poolkit.IOProcessor"} <= names, names
    for name in sorted(names):
        if name.split(".")[0] in ("pydantic", "torch"):
            continue
        assert isinstance(_resolve(name), type), name
