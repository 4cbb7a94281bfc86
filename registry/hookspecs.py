"""Hook specifications: the whole contract between poolkit and its plugins.

A plugin is a plain module named by an entry point in the ``poolkit.plugins`` group. Its
``@hookimpl`` functions receive a ``register`` callback and call it once per part they provide.
Targets are ``"module:attr"`` strings so that listing plugins never imports torch or model code;
they are imported only when a request needs the part.

Hook names and ``register`` signatures are the stable API: new keyword arguments may be added
(pluggy's argument pruning keeps old implementations working), nothing is removed without a
deprecation release.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from collections.abc import Callable

hookspec = pluggy.HookspecMarker("poolkit")
hookimpl = pluggy.HookimplMarker("poolkit")
"""Marker for plugin functions: ``@poolkit.hookimpl``."""


# --- model hooks -------------------------------------------------------------------------------


@hookspec
def register_architectures(register: Callable[..., None]) -> None:
    """Register model architectures (the ``architectures`` names of a HF ``config.json``).

    :param register: ``register(arch: str, target: str, *, tasks: Iterable[str] = (), fallback: bool = False)``;
        ``target`` is ``"module:Class"`` of a :class:`poolkit.PoolingModel` subclass, which declares the
        tasks it serves (``supported_tasks``, or ``tasks_for(config)`` when they depend on the config)
        and its ``default_pooling`` (see ``poolkit.model.interface``). ``tasks`` is optional and only
        kept for older plugins: ``poolkit plugins`` lists it without importing the class, the class's
        declaration is what the Engine serves. ``fallback=True`` (the built-in transformers fallback)
        serves any architecture the class ``accepts(config)`` that no plugin registered. Any other
        keyword fails the plugin.

    Use in plugins::

        @hookimpl
        def register_architectures(register):
            register("TinyNetModel", "my_pkg.tinynet:TinyNetModel")
    """


# --- pooling hooks -----------------------------------------------------------------------------


@hookspec
def register_poolers(register: Callable[..., None]) -> None:
    """Register pooling methods: reduce hidden states to one vector (or one per token).

    :param register: ``register(name: str, target: str)``; ``name`` is what
        ``pooler_config={"pooling_type": name}`` selects (``"MEAN"``, ``"CLS"``, ...), ``target``
        a ``"module:Class"`` of a :class:`poolkit.PoolingMethod` declaring its ``supported_tasks``.
    """


@hookspec
def register_activations(register: Callable[..., None]) -> None:
    """Register activations applied after pooling (``normalize``, ``softmax``, ``sigmoid``...).

    :param register: ``register(name: str, target: str)``; ``target`` is ``"module:callable"``
        taking and returning a float tensor. Task adapters load one by name with
        ``TaskContext.activation(name)``; poolkit registers ``normalize``, ``softmax``, ``sigmoid``
        and ``identity`` (``poolkit.builtin_poolers.activations``).
    """


@hookspec
def register_tasks(register: Callable[..., None]) -> None:
    """Register task adapters: what a task (``embed``, ``token_embed``...) pools and returns.

    :param register: ``register(name: str, target: str)``; ``target`` is ``"module:Class"`` of
        a :class:`poolkit.TaskAdapter` whose ``name`` is the registered name.
    """


# --- IO hooks ----------------------------------------------------------------------------------


@hookspec
def register_io_processors(register: Callable[..., None]) -> None:
    """Register IO processors run at both ends of the ``plugin`` task.

    :param register: ``register(name: str, target: str)``; ``target`` is ``"module:Class"`` of a
        :class:`poolkit.io_processor.IOProcessor` (see docs/plugins.md).
    """
