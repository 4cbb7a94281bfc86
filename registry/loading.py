"""Find, load and isolate plugins; fill one registry per kind of part.

Every plugin, built-in or third-party, is an entry point in the ``poolkit.plugins`` group whose
value is a module of ``@hookimpl`` functions. Loading is lazy (first registry access, never at
``import poolkit``), idempotent, and isolated: a plugin that fails to import or raises in a hook is
recorded with its name, distribution and cause, warned about once, rolled back and skipped; the rest
load. ``POOLKIT_STRICT_PLUGINS=1`` raises instead.

Hooks are called through pluggy (so a hookimpl declares only the arguments it uses, and a hookspec
may gain arguments), one plugin at a time: ``pm.subset_hook_caller(hook, remove_plugins=others)``.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import threading
import warnings
from dataclasses import dataclass, field
from typing import Any

import pluggy

from poolkit.registry import hookspecs
from poolkit.registry.errors import (
    PluginLoadError,
    RegistryConflictError,
    UnknownArchitectureError,
    UnknownNameError,
    UnknownPoolerError,
    UnknownTaskError,
)

try:  # the backport has the newest selection API on every Python
    import importlib_metadata as metadata
except ImportError:  # pragma: no cover
    from importlib import metadata  # type: ignore[no-redef]

ENTRY_POINT_GROUP = "poolkit.plugins"
logger = logging.getLogger("poolkit.registry")

# kind of part -> (hook name, error raised for an unknown name, what to call it in messages)
KINDS: dict[str, tuple[str, type[UnknownNameError], str]] = {
    "architectures": ("register_architectures", UnknownArchitectureError, "architecture"),
    "poolers": ("register_poolers", UnknownPoolerError, "pooling type"),
    "activations": ("register_activations", UnknownNameError, "activation"),
    "tasks": ("register_tasks", UnknownTaskError, "task"),
    "io_processors": ("register_io_processors", UnknownNameError, "IO processor"),
}

# kind of part -> the keyword arguments its ``register()`` accepts; any other keyword fails the plugin
REGISTER_KEYWORDS: dict[str, tuple[str, ...]] = {
    # tasks: what ``poolkit plugins`` shows without importing (the class's ``supported_tasks`` is what counts);
    # fallback: serves any architecture its class ``accepts(config)`` (the built-in transformers fallback)
    "architectures": ("tasks", "fallback"),
}

_DOTTED = r"(?!\d)\w+(?:\.(?!\d)\w+)*"
_TARGET = re.compile(rf"{_DOTTED}:{_DOTTED}")  # "package.module:Class" or "module:Outer.Inner"


@dataclass
class PluginInfo:
    """One entry point: where it came from, what it registered, and why it failed if it did."""

    name: str
    dist: str
    version: str
    value: str
    hooks: list[str] = field(default_factory=list)
    registered: dict[str, list[str]] = field(default_factory=dict)
    error: str | None = None
    failed_in: str | None = None
    """The hook that raised (``register_poolers``...), or None when the import itself failed."""
    conflicts: dict[str, list[str]] = field(default_factory=dict)
    """Parts it registered under a name an earlier plugin has: kind -> names, ignored (the earlier one wins)."""

    @property
    def label(self) -> str:
        return f"plugin '{self.name}' (distribution {self.dist} {self.version}, entry point {self.value})"

    @property
    def short_label(self) -> str:
        return f"plugin '{self.name}' (distribution {self.dist} {self.version})"

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "distribution": self.dist,
            "version": self.version,
            "entry_point": f"{self.name} = {self.value}",
            "builtin": self.dist == "poolkit",
            "hooks": self.hooks,
            "registered": self.registered,
            "conflicts": self.conflicts,
            "error": self.error,
        }


@dataclass
class Entry:
    """A registered part: its name, lazy ``module:attr`` target, owner plugin and extras."""

    kind: str
    name: str
    target: str
    plugin: PluginInfo
    meta: dict[str, Any] = field(default_factory=dict)

    def load(self) -> Any:
        """Import the target. An import failure names the plugin that registered it."""
        module_name, _, attr = self.target.partition(":")
        try:
            obj = importlib.import_module(module_name)
            for part in attr.split(".") if attr else []:
                obj = getattr(obj, part)
        except Exception as exc:
            raise PluginLoadError(
                f"{_title(KINDS[self.kind][2])} '{self.name}' from {self.plugin.label} could not "
                f"be imported from '{self.target}': {type(exc).__name__}: {exc}"
            ) from exc
        return obj


class Registry:
    """Name -> Entry for one kind of part. A name registered again keeps its first owner: the later
    entries are kept in ``conflicts`` (``name -> [winner, ignored, ...]``) for ``poolkit plugins --check``."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.entries: dict[str, Entry] = {}
        self.conflicts: dict[str, list[Entry]] = {}

    def add(self, entry: Entry) -> Entry | None:
        """Register ``entry``; if its name is taken, record the conflict and return the entry that keeps it."""
        winner = self.entries.get(entry.name)
        if winner is None:
            self.entries[entry.name] = entry
            return None
        self.conflicts.setdefault(entry.name, [winner]).append(entry)
        return winner

    def conflict_message(self, name: str, ignored: Entry) -> str:
        """One line: the part, both plugins and distributions, which one wins and what to do."""
        winner = self.entries[name]
        return (f"{KINDS[self.kind][2]} '{name}' is registered by both {winner.plugin.short_label} and "
                f"{ignored.plugin.short_label}; the first loaded, plugin '{winner.plugin.name}', wins (built-ins "
                f"load first, then by distribution name). Uninstall one, or leave one out with POOLKIT_PLUGINS.")

    def names(self) -> list[str]:
        return sorted(self.entries)

    def __contains__(self, name: str) -> bool:
        return name in self.entries

    def get(self, name: str) -> Entry:
        try:
            return self.entries[name]
        except KeyError:
            _hook, error, what = KINDS[self.kind]
            raise error(
                f"Unknown {what} '{name}'. Registered: {self.names()}. A plugin may provide it: "
                f"install it, check POOLKIT_PLUGINS, and run 'poolkit plugins'."
            ) from None

    def load(self, name: str) -> Any:
        return self.get(name).load()


def _title(what: str) -> str:
    return what[0].upper() + what[1:]  # "IO processor", not "Io processor"


def _selection() -> set[str] | None:
    """``POOLKIT_PLUGINS``: unset = all (None), ``""`` = none, else a comma list of entry-point or dist names."""
    spec = os.environ.get("POOLKIT_PLUGINS")
    if spec is None:
        return None
    return {_normalize(s) for s in spec.split(",") if s.strip()}


def _normalize(name: str) -> str:
    """A name as POOLKIT_PLUGINS compares it: distribution names the PEP 503 way (``My_Plugin`` = ``my-plugin``)."""
    return re.sub(r"[-_.]+", "-", name.strip()).lower()


class PluginHost:
    """The pluggy manager plus one :class:`Registry` per kind. Use :func:`get_host`."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager("poolkit")
        self.pm.add_hookspecs(hookspecs)
        self.plugins: list[PluginInfo] = []
        self.registries = {kind: Registry(kind) for kind in KINDS}
        self.unknown_selected: list[str] = []
        """Names in POOLKIT_PLUGINS that are no installed plugin's entry-point or distribution name."""
        self._loaded = False
        self._lock = threading.RLock()

    # --- loading ------------------------------------------------------------------------------

    def load(self) -> PluginHost:
        """Load every allowed entry point once; safe to call from any thread or process."""
        with self._lock:
            if self._loaded:
                return self
            self._loaded = True
            plugins = []
            for ep in self._entry_points():
                info = PluginInfo(ep.name, *_dist_of(ep), value=ep.value)
                self.plugins.append(info)
                plugin_name = f"{info.dist}:{ep.name}"
                try:
                    plugin = ep.load()
                    self.pm.register(plugin, name=plugin_name)
                    self.pm.check_pending()  # a misspelled hook name fails loudly, not silently
                    _check_hook_names(plugin, self.pm)
                except Exception as exc:
                    if self.pm.has_plugin(plugin_name):
                        self.pm.unregister(name=plugin_name)
                    self._fail(info, "failed to load", exc)
                    continue
                plugins.append((info, plugin))
            for info, plugin in plugins:
                self._call_hooks(info, plugin)
            return self

    def _entry_points(self) -> list[Any]:
        wanted = _selection()
        seen, eps, installed = set(), [], set()
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist, _version = _dist_of(ep)
            names = {_normalize(ep.name), _normalize(dist)}
            installed |= names
            key = (dist, ep.name)  # one dist-info seen twice (lib64 -> lib symlinks) loads once
            if key in seen or (wanted is not None and not names & wanted):
                continue
            seen.add(key)
            eps.append(ep)
        self.unknown_selected = sorted((wanted or set()) - installed)
        if self.unknown_selected:
            self._warn(f"POOLKIT_PLUGINS names {', '.join(map(repr, self.unknown_selected))}, which no installed "
                       f"plugin is (neither an entry-point nor a distribution name; 'poolkit plugins' lists them): "
                       f"it selects nothing.", PluginLoadError)
        # built-ins first so that conflicts always name the third-party plugin second
        return sorted(eps, key=lambda ep: (_dist_of(ep)[0] != "poolkit", _dist_of(ep)[0], ep.name))

    def _call_hooks(self, info: PluginInfo, plugin: Any) -> None:
        """Call ``plugin``'s hooks through pluggy, leaving every other plugin out of the call.

        One plugin at a time, so that a failure is attributed to it and isolated: a hook that raises
        rolls back everything the plugin registered and skips the rest of its hooks. A name an earlier
        plugin registered keeps that plugin's part; the conflict is one warning line and a
        ``poolkit plugins --check`` problem.
        """
        others = [p for p in self.pm.get_plugins() if p is not plugin]
        implemented = {caller.name for caller in self.pm.get_hookcallers(plugin) or ()}
        added: list[Entry] = []
        for kind, (hook_name, _err, _what) in KINDS.items():
            if hook_name not in implemented:
                continue
            info.hooks.append(hook_name)
            hook = self.pm.subset_hook_caller(hook_name, remove_plugins=others)
            try:
                hook(**self._hook_kwargs(self._register_callback(kind, info, added)))
            except Exception as exc:
                self._roll_back(info)
                self.pm.unregister(plugin)
                info.failed_in = hook_name
                self._fail(info, f"raised in {hook_name}", exc)
                return
        for entry in added:
            info.registered.setdefault(entry.kind, []).append(entry.name)

    def _roll_back(self, info: PluginInfo) -> None:
        """Remove every part ``info``'s plugin registered, and the conflicts it made (plugins load one after
        another, so the plugin rolled back is the last loaded: it never owns a name another plugin also has)."""
        info.conflicts.clear()
        for registry in self.registries.values():
            for name in [n for n, e in registry.entries.items() if e.plugin is info]:
                del registry.entries[name]
            for name, owners in list(registry.conflicts.items()):
                rest = [e for e in owners if e.plugin is not info]
                if len(rest) > 1:
                    registry.conflicts[name] = rest
                else:
                    del registry.conflicts[name]

    def _hook_kwargs(self, register: Any) -> dict[str, Any]:
        """Every argument of the ``register_*`` hooks; pluggy passes each hookimpl only those it declares."""
        return {"register": register}

    def _register_callback(self, kind: str, info: PluginInfo, added: list[Entry]) -> Any:
        """The ``register(name, target, **keywords)`` a plugin's ``register_<kind>`` hook receives."""
        allowed = REGISTER_KEYWORDS.get(kind, ())

        def register(name: str, target: str, **meta: Any) -> None:
            unknown = sorted(set(meta) - set(allowed))
            if unknown:
                raise TypeError(
                    f"register({name!r}, ...) in {KINDS[kind][0]} got unknown keyword argument(s) {unknown}; "
                    f"it accepts {list(allowed) if allowed else 'none'}"
                )
            if not isinstance(target, str) or not _TARGET.fullmatch(target):
                raise TypeError(f"register({name!r}, ...) needs a 'module:attr' string target, got {target!r}")
            if "tasks" in meta:  # optional now that the class declares them; kept for older plugins
                tasks = meta["tasks"]
                meta["tasks"] = tuple(tasks)
                if isinstance(tasks, str) or not all(isinstance(t, str) for t in meta["tasks"]):
                    raise TypeError(f"register({name!r}, ..., tasks=...) needs a list of task names, got {tasks!r}")
            entry = Entry(kind, name, target, info, meta)
            registry = self.registries[kind]
            if registry.add(entry) is None:
                added.append(entry)
                return
            info.conflicts.setdefault(kind, []).append(name)
            self._warn(registry.conflict_message(name, entry), RegistryConflictError)

        return register

    def _fail(self, info: PluginInfo, what: str, exc: Exception) -> None:
        info.error = f"{type(exc).__name__}: {exc}"
        message = (
            f"poolkit: {info.label} {what} and was skipped:\n  {info.error}\n"
            f"Set POOLKIT_STRICT_PLUGINS=1 to raise instead, or leave it out of POOLKIT_PLUGINS."
        )
        if os.environ.get("POOLKIT_STRICT_PLUGINS") == "1":
            raise PluginLoadError(message) from exc
        logger.warning("%s", message.removeprefix("poolkit: "), exc_info=exc)
        warnings.warn(message, RuntimeWarning, stacklevel=3)

    def _warn(self, message: str, error: type[Exception]) -> None:
        """One line on the ``poolkit.registry`` logger for a selection or conflict problem, no traceback
        (``poolkit plugins --check`` lists them all and fails); ``error`` instead under POOLKIT_STRICT_PLUGINS=1."""
        if os.environ.get("POOLKIT_STRICT_PLUGINS") == "1":
            raise error(message)
        logger.warning("poolkit: %s", message)

    # --- lookups ------------------------------------------------------------------------------

    def registry(self, kind: str) -> Registry:
        self.load()
        return self.registries[kind]

    def failures(self) -> list[PluginInfo]:
        self.load()
        return [p for p in self.plugins if p.error]


_host: PluginHost | None = None
_host_lock = threading.Lock()


def get_host() -> PluginHost:
    """The process-wide plugin host, loaded on first use."""
    global _host
    with _host_lock:
        if _host is None:
            _host = PluginHost()
    return _host.load()


def reset_host() -> None:
    """Forget loaded plugins, so the next :func:`get_host` re-reads entry points (tests, notebooks)."""
    global _host
    with _host_lock:
        _host = None
    importlib.invalidate_caches()


def _check_hook_names(plugin: Any, pm: pluggy.PluginManager) -> None:
    """Refuse a hookimpl named unlike its hook (``specname=``): pluggy's ``subset_hook_caller`` finds
    plugins by attribute name, so such a plugin could not be left out of other plugins' calls."""
    for caller in pm.get_hookcallers(plugin) or ():
        if not hasattr(plugin, caller.name):
            raise TypeError(f"hook {caller.name!r} is implemented under another name (specname=); poolkit calls "
                            f"each plugin's hooks on their own and needs the function named {caller.name!r}")


def _dist_of(ep: Any) -> tuple[str, str]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return "unknown", "?"
    return dist.metadata["Name"] or dist.name, dist.version or "?"


__all__ = ["ENTRY_POINT_GROUP", "KINDS", "REGISTER_KEYWORDS", "Entry", "PluginHost", "PluginInfo", "Registry",
           "get_host", "reset_host"]
