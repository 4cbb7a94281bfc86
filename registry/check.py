"""Import every registered part and check it against its kind's base class (``poolkit plugins --check``).

Listing plugins never imports a target; these functions do, on request:

- :func:`check_plugins`: one dict ``{"plugin", "distribution", "kind", "name", "target", "problem"}``
  per broken part (a target that does not import, a class of the wrong kind, a declaration missing),
  per plugin that failed to load (``kind`` and ``name`` None, unless a hook of that kind raised), per
  part ignored because an earlier plugin registered its name (a conflict: the row is the ignored
  part's), and per name in ``POOLKIT_PLUGINS`` that no installed plugin has (``distribution`` None).
  An empty list means every part would load.
- :func:`declared_tasks`: the tasks a part's class declares (``poolkit models``).

Importing this module imports neither torch nor any plugin; the checks import both.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

from poolkit.registry.errors import PluginLoadError
from poolkit.registry.loading import KINDS, get_host

if TYPE_CHECKING:
    from poolkit.registry.loading import Entry, PluginHost

BASES = {
    "architectures": "poolkit.model.interface:PoolingModel",
    "poolers": "poolkit.pooling:PoolingMethod",
    "tasks": "poolkit.tasks:TaskAdapter",
    "io_processors": "poolkit.io_processor:IOProcessor",
}
"""Kind -> its base class (activations are plain callables)."""


def declared_tasks(entry: Entry) -> tuple[str, ...]:
    """The tasks ``entry``'s class declares in ``supported_tasks`` (for an architecture whose
    ``tasks_for(config)`` depends on the config: every task it may serve). Imports the target; when
    that fails, or the class declares nothing, the ``tasks=`` given to ``register()``, if any."""
    try:
        tasks = getattr(entry.load(), "supported_tasks", None)
    except PluginLoadError:
        tasks = None
    if tasks is None or isinstance(tasks, str):
        return tuple(entry.meta.get("tasks", ()))
    return tuple(tasks) if isinstance(tasks, (tuple, list)) else tuple(sorted(tasks))


def check_plugins(host: PluginHost | None = None) -> list[dict[str, Any]]:
    """Every broken part of every registered kind, and every plugin that failed to load; [] when all is well."""
    return _inspect(host or get_host())


def _inspect(host: PluginHost) -> list[dict[str, Any]]:
    hook_kinds = {hook: kind for kind, (hook, _error, _what) in KINDS.items()}
    broken: list[dict[str, Any]] = []
    for p in host.failures():
        stage = f"raised in {p.failed_in}" if p.failed_in else "failed to load"
        broken.append({"plugin": p.name, "distribution": p.dist, "kind": hook_kinds.get(p.failed_in or ""),
                       "name": None, "target": p.value, "problem": f"{stage}: {p.error}"})
    for name in host.unknown_selected:
        broken.append({"plugin": name, "distribution": None, "kind": None, "name": None, "target": None,
                       "problem": "POOLKIT_PLUGINS names it, but no installed plugin has this entry-point or "
                                  "distribution name: it selects nothing ('poolkit plugins' lists the installed ones)"})
    for kind in KINDS:
        registry = host.registry(kind)
        for name, (winner, *ignored) in sorted(registry.conflicts.items()):
            for entry in ignored:
                broken.append({"plugin": entry.plugin.name, "distribution": entry.plugin.dist, "kind": kind,
                               "name": name, "target": entry.target,
                               "problem": f"conflict: {winner.plugin.short_label} registers {name!r} too and "
                                          f"wins, as the first loaded; this part is ignored"})
    for kind in KINDS:
        registry = host.registry(kind)
        for name in registry.names():
            entry = registry.entries[name]
            problems = _check(entry)
            if problems:
                broken.append({"plugin": entry.plugin.name, "distribution": entry.plugin.dist, "kind": kind,
                               "name": name, "target": entry.target, "problem": "; ".join(problems)})
    return broken


def _check(entry: Entry) -> list[str]:
    """The problems of one part."""
    try:
        obj = entry.load()
    except PluginLoadError as exc:
        cause = exc.__cause__ or exc
        return [f"cannot import {entry.target!r}: {type(cause).__name__}: {cause}"]
    if entry.kind not in BASES:  # activations: any callable
        return [] if callable(obj) else [f"not callable: {_describe(obj)}"]
    base = _load(BASES[entry.kind])
    base_name = f"poolkit.{base.__name__}"
    if not isinstance(obj, type):
        return [f"not a class but {_describe(obj)}; expected a subclass of {base_name}"]
    if entry.kind == "architectures":
        return _check_architecture(entry, obj)
    if not issubclass(obj, base):
        return [f"{_describe(obj)} is not a subclass of {base_name}"]
    return {"poolers": _check_pooler, "tasks": _check_task, "io_processors": _check_io_processor}[entry.kind](
        entry, obj, base)


def _check_architecture(entry: Entry, cls: type) -> list[str]:
    from poolkit.model.interface import contract_problems

    problems = [f"{_describe(cls)} {problem}" for problem in contract_problems(cls)]
    problems += _task_names_problems(cls, "supported_tasks")
    problems += _quantizations_problems(cls)
    if entry.meta.get("fallback") and not callable(getattr(cls, "accepts", None)):
        problems.append("registered with fallback=True but has no accepts(config) classmethod")
    return problems


def _check_pooler(entry: Entry, cls: type, base: type) -> list[str]:
    problems = _task_names_problems(cls, "supported_tasks")
    if not problems and not cls.supported_tasks:
        problems.append("declares no supported_tasks (e.g. poolkit.pooling.SEQUENCE_TASKS)")
    if cls.__call__ is base.__call__:
        problems.append("does not implement __call__(hidden, batch)")
    if not isinstance(inspect.getattr_static(cls, "load"), classmethod):
        problems.append("load must be a classmethod: load(cls, init: poolkit.pooling.PoolerInit)")
    return problems


def _check_task(entry: Entry, cls: type, base: type) -> list[str]:
    problems = []
    name = getattr(cls, "name", None)
    if not isinstance(name, str):
        problems.append("has no name (the class attribute naming the task)")
    elif name != entry.name:
        problems.append(f"its name {name!r} is not the name it is registered by, {entry.name!r}")
    if not isinstance(getattr(cls, "output_cls", None), type):
        problems.append("has no output_cls (the poolkit.PoolingOutput subclass it returns)")
    if cls.pool is base.pool:
        problems.append("does not implement pool(hidden, batch, params)")
    return problems


def _check_io_processor(entry: Entry, cls: type, base: type) -> list[str]:
    problems = []
    missing = sorted(getattr(cls, "__abstractmethods__", ()))
    if missing:
        problems.append(f"does not implement {', '.join(missing)}")
    if not isinstance(getattr(cls, "task", None), str):
        problems.append("has no task (the engine task it runs, e.g. 'embed')")
    return problems


def _task_names_problems(cls: type, attr: str) -> list[str]:
    tasks = getattr(cls, attr, ())
    if isinstance(tasks, str):
        return [f"{attr} is the string {tasks!r}, not a tuple of task names (a missing comma?)"]
    try:
        ok = all(isinstance(t, str) for t in tasks)
    except TypeError:
        ok = False
    return [] if ok else [f"{attr} must be task names, got {tasks!r}"]


def _quantizations_problems(cls: type) -> list[str]:
    from poolkit.layers.quantized import QUANTIZATIONS

    names = getattr(cls, "supported_quantizations", ())
    if isinstance(names, str):
        return [f"supported_quantizations is the string {names!r}, not a tuple (a missing comma?)"]
    try:
        unknown = [q for q in names if q not in QUANTIZATIONS]
    except TypeError:
        return [f"supported_quantizations must be a tuple of names, got {names!r}"]
    return [f"supported_quantizations names {unknown}; poolkit knows {list(QUANTIZATIONS)}"] if unknown else []


def _load(target: str) -> Any:
    import importlib

    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def _describe(obj: Any) -> str:
    if isinstance(obj, type):
        return f"class {obj.__module__}.{obj.__qualname__}"
    return f"{type(obj).__name__} {obj!r}"[:120]


__all__ = ["BASES", "check_plugins", "declared_tasks"]
