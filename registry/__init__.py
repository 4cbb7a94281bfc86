"""The plugin host: loads ``poolkit.plugins`` entry points and keeps one registry per kind of part."""

from poolkit.registry.check import check_plugins, declared_tasks
from poolkit.registry.errors import (
    PluginLoadError,
    PoolkitError,
    RegistryConflictError,
    UnknownArchitectureError,
    UnknownNameError,
    UnknownPoolerError,
    UnknownTaskError,
)
from poolkit.registry.hookspecs import hookimpl, hookspec
from poolkit.registry.loading import ENTRY_POINT_GROUP, PluginHost, get_host, reset_host

__all__ = [
    "ENTRY_POINT_GROUP",
    "PluginHost",
    "PluginLoadError",
    "PoolkitError",
    "RegistryConflictError",
    "UnknownArchitectureError",
    "UnknownNameError",
    "UnknownPoolerError",
    "UnknownTaskError",
    "check_plugins",
    "declared_tasks",
    "get_host",
    "hookimpl",
    "hookspec",
    "reset_host",
]
