"""Errors raised by the plugin host. Each one names the plugin, its distribution and the cause."""

from __future__ import annotations


class PoolkitError(Exception):
    """Base class for poolkit's own errors."""


class PluginLoadError(PoolkitError):
    """A plugin failed to import or raised inside a hook (raised only in strict mode)."""


class RegistryConflictError(PoolkitError):
    """Two plugins registered the same name for the same kind of part."""


class UnknownNameError(PoolkitError, KeyError):
    """A name that no loaded plugin registered. The message lists what is registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class UnknownArchitectureError(UnknownNameError):
    """No plugin registered this model architecture."""


class UnknownPoolerError(UnknownNameError):
    """No plugin registered this pooling type."""


class UnknownTaskError(UnknownNameError):
    """No plugin registered this task, or the model does not support it."""
