"""The task adapter interface: what a task pools from hidden states and what it returns.

Built-in tasks (``embed``, ``token_embed``) live in ``poolkit.builtin_poolers.tasks`` and register
through the ``register_tasks`` hook like a plugin's would.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import torch

    from poolkit.batch import PackedBatch
    from poolkit.config import ModelConfig, PoolerConfig
    from poolkit.outputs import PoolingOutput
    from poolkit.params import PoolingParams
    from poolkit.registry.loading import PluginHost


@dataclass
class TaskContext:
    """What a task adapter may read about the loaded model. Built once per Engine."""

    model_config: ModelConfig
    pooler_config: PoolerConfig
    host: PluginHost
    model: Any
    cache: dict[str, Any] = field(default_factory=dict)

    def pooling_method(self, name: str) -> Any:
        """An instance of the registered pooling method ``name`` (``MEAN``, ``CLS``...), given the pooler config."""
        poolers = self.host.registry("poolers")
        if name not in poolers and name.upper() in poolers:
            name = name.upper()
        return poolers.load(name)(self.pooler_config)

    def activation(self, name: str) -> Any:
        return self.host.registry("activations").load(name)


class TaskAdapter:
    """One pooling task. Subclasses set ``name`` and ``output_cls`` and implement :meth:`pool`."""

    name: ClassVar[str]
    output_cls: ClassVar[type[PoolingOutput]]

    def __init__(self, ctx: TaskContext) -> None:
        self.ctx = ctx

    def check(self, params: PoolingParams) -> None:
        """Reject parameters this task cannot honour, before any work is done."""

    def pool(self, hidden: torch.Tensor, batch: PackedBatch, params: list[PoolingParams]) -> list[torch.Tensor]:
        """One result tensor per sequence of ``batch``; ``hidden`` is ``(N, C)`` packed, fp32."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"
