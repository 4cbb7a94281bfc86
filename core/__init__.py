"""poolkit: serve pooling models (embeddings, classifiers, rerankers, reward models) from plugins.

``import poolkit`` is light: it imports no torch, no model code and loads no plugin. The names
below resolve on first attribute access.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "Engine": "poolkit.engine",
    "PoolingParams": "poolkit.params",
    "PoolerConfig": "poolkit.config",
    "PoolingRequestOutput": "poolkit.outputs",
    "PoolingOutput": "poolkit.outputs",
    "EmbeddingOutput": "poolkit.outputs",
    "hookimpl": "poolkit.registry.hookspecs",
    "get_host": "poolkit.registry",
    # the plugin contract: one base class per kind of part
    "PoolingModel": "poolkit.model.interface",
    "ModelInit": "poolkit.model.interface",
    "PoolingMethod": "poolkit.pooling",
    "TaskAdapter": "poolkit.tasks",
    "TaskContext": "poolkit.tasks",
    "IOProcessor": "poolkit.io_processor",
    "InvalidRequestError": "poolkit.errors",
}

__all__ = [*_EXPORTS, "__version__"]

if TYPE_CHECKING:
    from poolkit.config import PoolerConfig
    from poolkit.engine import Engine
    from poolkit.errors import InvalidRequestError
    from poolkit.io_processor import IOProcessor
    from poolkit.model.interface import ModelInit, PoolingModel
    from poolkit.pooling import PoolingMethod
    from poolkit.tasks import TaskAdapter, TaskContext
    from poolkit.outputs import EmbeddingOutput, PoolingOutput, PoolingRequestOutput
    from poolkit.params import PoolingParams
    from poolkit.registry import get_host
    from poolkit.registry.hookspecs import hookimpl


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from importlib.metadata import version

        globals()["__version__"] = value = version("poolkit")  # read once: /version and TEI's /info ask per request
        return value
    if name in _EXPORTS:
        import importlib

        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'poolkit' has no attribute {name!r}")
