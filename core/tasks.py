"""The task adapter interface: what a task pools from hidden states and what it returns.

Built-in tasks (``embed``, ``token_embed``) live in ``poolkit.builtin_poolers.tasks`` and register
through the ``register_tasks`` hook like a plugin's would.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from poolkit.pooling import PoolerInit

if TYPE_CHECKING:
    import torch

    from poolkit.batch import PackedBatch
    from poolkit.config import ModelConfig, PoolerConfig
    from poolkit.outputs import PoolingOutput
    from poolkit.params import PoolingParams
    from poolkit.registry.loading import PluginHost


@dataclass
class TaskContext:
    """What a task adapter may read about the loaded model, built once per Engine: its configs, the
    plugin host (to load registered pooling methods and activations by name) and the model, whose
    attributes are those of :class:`poolkit.PoolingModel`; ``cache`` is the adapters' to share."""

    model_config: ModelConfig
    pooler_config: PoolerConfig
    host: PluginHost
    model: Any
    cache: dict[str, Any] = field(default_factory=dict)

    def pooling_method(self, name: str) -> Any:
        """The registered pooling method ``name`` (``MEAN``, ``CLS``...) built for this model (``PoolingMethod.load``)."""
        poolers = self.host.registry("poolers")
        if name not in poolers and name.upper() in poolers:
            name = name.upper()
        return poolers.load(name).load(PoolerInit(self.pooler_config, self.model_config, self.model))

    def activation(self, name: str) -> Any:
        return self.host.registry("activations").load(name)


class TaskAdapter:
    """Base class of task adapters: what one pooling task computes from a batch's hidden states.

    Register a subclass with the ``register_tasks`` hook under its :attr:`name`. One instance is built
    per Engine, when the Engine is built (so a misconfiguration stops the build, not a request), with
    the :class:`TaskContext`; :meth:`check` runs on every request's params before the request joins a
    batch, :meth:`pool` on every batch.
    """

    name: ClassVar[str]
    """The task's name: what ``Engine.encode(task=...)``, a model's ``supported_tasks`` and ``/pooling``'s
    ``task`` field say."""
    output_cls: ClassVar[type[PoolingOutput]]
    """The :class:`poolkit.outputs.PoolingOutput` subclass each result is wrapped in (``.outputs``)."""

    def __init__(self, ctx: TaskContext) -> None:
        self.ctx = ctx

    def check(self, params: PoolingParams) -> None:
        """Reject parameters this task cannot honour, before any work is done: raise
        :class:`poolkit.errors.InvalidRequestError` (the server's 400) naming the problem."""

    def pool(self, hidden: torch.Tensor, batch: PackedBatch, params: list[PoolingParams]) -> list[torch.Tensor]:
        """One result tensor per sequence of ``batch``; ``hidden`` is ``(N, C)`` packed, fp32. An exception
        here is a bug (the server's 500): validate in :meth:`check`."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"
