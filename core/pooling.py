"""The pooling-method contract: :class:`PoolingMethod`, the base class of every pooler (built-in or plugin).

A pooling method reduces packed hidden states ``(N, C)`` to one row per sequence (sequence methods:
CLS, MEAN...) or keeps a matrix per sequence (token methods: ALL, STEP), and declares the tasks it
serves (vLLM's pooler design). Register one with the ``register_poolers`` hook; a pooler config
selects it by name (``{"pooling_type": "MY_POOL"}``), and a Sentence Transformers checkpoint whose
``pooling_mode_*`` flag names it (see :attr:`PoolingMethod.st_modes`) selects it too.

This module imports no torch at import time beyond type names, so ``poolkit plugins --check`` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import torch

    from poolkit.batch import PackedBatch
    from poolkit.config import PoolerConfig

SEQUENCE_TASKS = frozenset({"embed", "classify", "score"})
"""Tasks that need one vector per sequence."""
TOKEN_TASKS = frozenset({"token_embed", "token_classify"})
"""Tasks that need one vector per token."""


class PoolingMethod:
    """Base class of poolers. Subclasses set :attr:`name` and :attr:`supported_tasks` and implement ``__call__``.

    Built with the model's resolved :class:`poolkit.config.PoolerConfig`, for methods that read it (STEP).
    """

    name: ClassVar[str] = "?"
    """The name it is registered and selected by (``pooling_type``)."""
    supported_tasks: ClassVar[frozenset[str]] = frozenset()
    """The tasks it can pool for: usually :data:`SEQUENCE_TASKS` or :data:`TOKEN_TASKS`."""
    st_modes: ClassVar[tuple[str, ...]] = ()
    """Sentence Transformers pooling modes it implements: ``pooling_mode_<mode>_tokens`` flags or the
    ST >= 5 ``pooling_mode`` string (e.g. ``("mean_sqrt_len",)``), so such checkpoints select it."""

    default_normalize: ClassVar[bool] = True
    """Whether ``embed`` L2-normalizes this method's vectors when neither the pooler config nor the request
    says (SPLADE: False, as Sentence Transformers' SparseEncoder)."""

    def __init__(self, config: PoolerConfig | None = None) -> None:
        self.config = config

    def for_model(self, model: Any) -> PoolingMethod:
        """Called once with the served model when a task adapter takes this method; returns the method to use
        (default: itself). A method that pools a model's own head binds it here (SPLADE: the MLM logits)."""
        return self

    def __call__(self, hidden: torch.Tensor, batch: PackedBatch) -> torch.Tensor | list[torch.Tensor]:
        """``(B, C)`` for sequence methods, a list of ``(L_i, C)`` for token methods; ``hidden`` is ``(N, C)`` fp32."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(tasks={sorted(self.supported_tasks)})"


__all__ = ["SEQUENCE_TASKS", "TOKEN_TASKS", "PoolingMethod"]
