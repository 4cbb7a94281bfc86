"""The import graph of poolkit's own modules has no cycle, each layer imports only the layers below it, and no
module re-exports names from another (pre-1.0: every name has one home, its importers use it).

Read from the source with :mod:`ast` (nothing is imported), with the package map of pyproject.toml. An import
counts wherever it is written: at module level, inside a function (a function-level import only delays a
cycle to the first call, it does not remove it) and under ``if TYPE_CHECKING:`` (an annotation naming a class
is a dependency on its module all the same; import-linter counts these too). Plugin targets named by string
(``"module:attr"``), which the plugin host resolves on use, are not imports.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIRS = {"core": "poolkit", "registry": "poolkit.registry", "builtin_models": "poolkit.builtin_models",
                "builtin_poolers": "poolkit.builtin_poolers", "io_plugins": "poolkit.io_plugins"}


def _modules() -> dict[str, Path]:
    found = {}
    for folder, package in PACKAGE_DIRS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join([package, *parts])] = path
    return found


MODULES = _modules()


def _known(name: str) -> str | None:
    """The poolkit module an imported dotted name lands in (the longest known prefix), or None."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def _is_type_checking(node: ast.AST) -> bool:
    test = node.test if isinstance(node, ast.If) else None
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(module: str, path: Path) -> list[tuple[str, int, str]]:
    """(imported poolkit module, line, where: "" | "in a function" | "TYPE_CHECKING") per import of ``module``."""
    is_package = path.name == "__init__.py"
    found: list[tuple[str, int, str]] = []

    def visit(node: ast.AST, where: str) -> None:
        for child in ast.iter_child_nodes(node):
            visit_stmt(child, where)

    def visit_stmt(node: ast.AST, where: str) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                if (target := _known(alias.name)) is not None:
                    found.append((target, node.lineno, where))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".") if is_package else module.split(".")[:-1]
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:  # `from package import module` imports the module
                full = f"{base}.{alias.name}"
                target = full if full in MODULES else _known(base)
                if target is not None:
                    found.append((target, node.lineno, where))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            where = where or "in a function"
        elif _is_type_checking(node):
            where = "TYPE_CHECKING"
        visit(node, where)

    visit(_tree(path), "")
    return found


@functools.cache
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), str(path))


@functools.cache
def _graph() -> dict[str, dict[str, tuple[int, str]]]:
    """module -> {imported module: (line, where) of its first import}."""
    graph: dict[str, dict[str, tuple[int, str]]] = {module: {} for module in MODULES}
    for module, path in MODULES.items():
        for target, line, where in _imports(module, path):
            if target != module:
                graph[module].setdefault(target, (line, where))
    return graph


def _cycles(graph: dict[str, dict[str, tuple[int, str]]]) -> list[tuple[set[str], list[str]]]:
    """Each strongly connected component of more than one module (Tarjan), with one shortest cycle through it."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    for v in sorted(graph):
        if v not in index:
            connect(v)
    cycles = []
    for component in components:
        start = min(component)
        paths = {start: [start]}
        frontier = [start]
        while frontier and start not in [w for v in frontier for w in graph[v]]:
            nxt = []
            for v in frontier:
                for w in sorted(graph[v]):
                    if w in component and w not in paths:
                        paths[w] = paths[v] + [w]
                        nxt.append(w)
            frontier = nxt
        last = next(v for v in frontier if start in graph[v])
        cycles.append((component, paths[last] + [start]))
    return cycles


def _describe(graph, component: set[str], cycle: list[str]) -> str:
    hops = [f"{len(component)} modules import each other: {', '.join(sorted(component))}; one cycle:"]
    for a, b in zip(cycle, cycle[1:]):
        line, where = graph[a][b]
        hops.append(f"  {MODULES[a].relative_to(ROOT)}:{line}{f' ({where})' if where else ''}: {a} -> {b}")
    return "\n".join(hops)


# The layering, bottom to top: a module may import modules of its own layer and of the layers below, never above.
# A module belongs to the layer of the longest name below that is its own name or a package above it.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("plugin host", ("poolkit.registry.errors", "poolkit.registry.hookspecs", "poolkit.registry.loading")),
    ("base", ("poolkit.errors", "poolkit.params", "poolkit.outputs", "poolkit.logs", "poolkit.truncation",
              "poolkit.isolate", "poolkit.quantize")),
    ("model files", ("poolkit.config", "poolkit.model.hub", "poolkit.model.weights")),
    ("layers", ("poolkit.batch", "poolkit.layers")),
    ("model", ("poolkit.model", "poolkit.pooling", "poolkit.tasks", "poolkit.inputs", "poolkit.media",
               "poolkit.request", "poolkit.scoring", "poolkit.io_processor")),
    ("plugin checks", ("poolkit.registry", "poolkit.registry.check")),  # the package re-exports check_plugins
    ("engine", ("poolkit.engine", "poolkit.io_runner", "poolkit")),  # ``poolkit`` itself: only the package, its lazy public names
    ("front ends", ("poolkit.server", "poolkit.jobs", "poolkit.integrations", "poolkit.testing",
                    "poolkit.pytest_plugin")),
    ("cli", ("poolkit.cli",)),
]
# Plugins register through entry points, exactly as a third-party one: no module above imports them.
PLUGINS = ("poolkit.builtin_models", "poolkit.builtin_poolers", "poolkit.io_plugins")
# Known exceptions (module, plugin module it imports), each to be removed by the change that moves the code
# (a stale one fails the test). None: the IOProcessor contract and its runner are poolkit's (issue 22 item 2).
CORE_IMPORTS_OF_PLUGINS: set[tuple[str, str]] = set()


def _layer(module: str) -> int | None:
    best: tuple[int, int] | None = None  # (length of the matching name, layer)
    for rank, (_, names) in enumerate(LAYERS):
        for name in names:
            if module == name or (name != "poolkit" and module.startswith(name + ".")):
                if best is None or len(name) > best[0]:
                    best = (len(name), rank)
    return None if best is None else best[1]


def test_every_module_has_a_place():
    """A new module is placed in a layer (or is a plugin) before it can be imported from anywhere."""
    homeless = [m for m in MODULES if _layer(m) is None and not m.startswith(PLUGINS)]
    assert homeless == [], f"add these modules to LAYERS in {Path(__file__).name}: {homeless}"


def test_cycle_finder_sees_every_kind_of_import():
    graph = {"a": {"b": (1, "")}, "b": {"c": (2, "in a function")}, "c": {"a": (3, "TYPE_CHECKING")},
             "d": {"a": (4, "")}}
    assert _cycles(graph) == [({"a", "b", "c"}, ["a", "b", "c", "a"])]
    assert _cycles({"a": {"b": (1, "")}, "b": {}}) == []


def test_no_import_cycle():
    graph = _graph()
    cycles = _cycles(graph)
    assert cycles == [], "import cycles among poolkit modules:\n" + "\n".join(_describe(graph, *c) for c in cycles)


def test_layers_import_only_downward():
    graph = _graph()
    wrong, excepted = [], set()
    for module, targets in sorted(graph.items()):
        if module.startswith(PLUGINS) or _layer(module) is None:
            continue
        for target, (line, _) in sorted(targets.items()):
            where = f"{MODULES[module].relative_to(ROOT)}:{line}: {module} -> {target}"
            if target.startswith(PLUGINS):
                if (module, target) in CORE_IMPORTS_OF_PLUGINS:
                    excepted.add((module, target))
                else:
                    wrong.append(f"{where} (core imports a plugin)")
            elif _layer(target) is not None and _layer(target) > _layer(module):
                wrong.append(f"{where} ({LAYERS[_layer(module)][0]} imports {LAYERS[_layer(target)][0]})")
    assert wrong == [], "imports against the layering:\n" + "\n".join(wrong)
    stale = CORE_IMPORTS_OF_PLUGINS - excepted
    assert not stale, f"these imports are gone: remove them from CORE_IMPORTS_OF_PLUGINS: {stale}"


def _module_level_imports(tree: ast.Module) -> dict[str, int]:
    """Names bound by the imports of a module's body (also under ``if``/``try``) -> line."""
    bound: dict[str, int] = {}

    def walk(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, (ast.Import, ast.ImportFrom)) and getattr(node, "module", None) != "__future__":
                for alias in node.names:
                    bound[(alias.asname or alias.name).split(".")[0]] = node.lineno
            elif isinstance(node, ast.If):
                walk(node.body)
                walk(node.orelse)
            elif isinstance(node, ast.Try):
                walk(node.body)
                for handler in node.handlers:
                    walk(handler.body)

    walk(tree.body)
    return bound


def test_no_shims_or_re_exports():
    """Outside a package's ``__init__`` (where public names are gathered), a module is more than imports and
    uses every name it imports: an import nothing uses is dead code or a re-export from an old home."""
    found = []
    for module, path in MODULES.items():
        if path.name == "__init__.py":
            continue
        tree = _tree(path)
        body = [n for n in tree.body if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))]
        if all(isinstance(n, (ast.Import, ast.ImportFrom)) or (
                isinstance(n, ast.Assign) and [getattr(t, "id", None) for t in n.targets] == ["__all__"])
               for n in body):
            found.append(f"{path.relative_to(ROOT)}: only imports (a shim): import from the real module instead")
            continue
        used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
        for name, line in _module_level_imports(tree).items():
            if name not in used:
                found.append(f"{path.relative_to(ROOT)}:{line}: {name} is imported and never used")
    assert found == [], "\n".join(found)


MAX_LINES = 400  # a source file longer than this holds more than one job: split it (issue 22)
# Known exceptions, each to be removed by the change that shortens the file (a stale one fails the test): none.
OVER_THE_LINE_BOUND: set[str] = set()


def test_no_source_file_over_the_line_bound():
    long = {str(path.relative_to(ROOT)): n for path in MODULES.values()
            if (n := len(path.read_text().splitlines())) > MAX_LINES}
    wrong = {path: n for path, n in long.items() if path not in OVER_THE_LINE_BOUND}
    assert wrong == {}, f"source files over {MAX_LINES} lines (split each into modules of one job): {wrong}"
    stale = OVER_THE_LINE_BOUND - set(long)
    assert not stale, f"these files are within the bound now: remove them from OVER_THE_LINE_BOUND: {stale}"
