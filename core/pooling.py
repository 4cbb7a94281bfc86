"""The pooling-method contract: :class:`PoolingMethod`, the base class of every pooler (built-in or plugin).

A pooling method reduces packed hidden states ``(N, C)`` to one row per sequence (sequence methods:
CLS, MEAN...) or keeps a matrix per sequence (token methods: ALL, STEP), and declares the tasks it
serves (vLLM's pooler design). Register one with the ``register_poolers`` hook; a pooler config
selects it by name (``{"pooling_type": "MY_POOL"}``), and a Sentence Transformers checkpoint whose
``pooling_mode_*`` flag names it (see :attr:`PoolingMethod.st_modes`) selects it too.

This module imports no torch at import time beyond type names, so ``poolkit plugins --check`` stays light.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import torch

    from poolkit.batch import PackedBatch
    from poolkit.config import ModelConfig, PoolerConfig

SEQUENCE_TASKS = frozenset({"embed", "classify", "score"})
"""Tasks that need one vector per sequence."""
TOKEN_TASKS = frozenset({"token_embed", "token_classify"})
"""Tasks that need one vector per token."""


@dataclass
class PoolerInit:
    """What a pooling method may read about the model it pools, once, when a task adapter takes it
    (:meth:`PoolingMethod.load`): a learned pooler reads its weights here (:meth:`weights`)."""

    config: PoolerConfig
    """The model's resolved pooler config."""
    model_config: ModelConfig
    """The model directory (``.path``), its HF config (``.hf_config``) and Sentence Transformers files (``.st``)."""
    model: Any
    """The loaded :class:`poolkit.PoolingModel` (``hidden_size``, its heads)."""

    @property
    def path(self) -> Path:
        return Path(self.model_config.path)

    @property
    def hf_config(self) -> Any:
        return self.model_config.hf_config

    def weights(self, *files: str) -> dict[str, torch.Tensor]:
        """The tensors of ``files`` in the model directory (``.safetensors`` or torch state dicts) on the CPU, keyed
        ``<file path without suffix>.<key>`` (``pooler.safetensors`` gives ``pooler.weight``); a missing file is
        a ``FileNotFoundError`` naming it."""
        from poolkit.model.weights import load_extra_weight_files

        missing = [f for f in files if not (self.path / f).is_file()]
        if missing:
            raise FileNotFoundError(f"{missing} not found in the model directory {self.path}")
        return load_extra_weight_files(self.path, files)


class PoolingMethod:
    """Base class of poolers. Subclasses set :attr:`name` and :attr:`supported_tasks` and implement ``__call__``.

    Built by :meth:`load` for the model it pools; the default builds it from the model's resolved
    :class:`poolkit.config.PoolerConfig` alone (STEP reads ``step_tag_id`` from it).
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

    @classmethod
    def load(cls, init: PoolerInit) -> PoolingMethod:
        """The method for one loaded model, built once when a task adapter takes it (default:
        ``cls(init.config)``). Override it to read the model's config or weights (a learned pooler) or to
        bind the model's own head (SPLADE: its MLM logits); raise to refuse the model (the Engine's build fails)."""
        return cls(init.config)

    def __call__(self, hidden: torch.Tensor, batch: PackedBatch) -> torch.Tensor | list[torch.Tensor]:
        """``(B, C)`` for sequence methods, a list of ``(L_i, C)`` for token methods; ``hidden`` is ``(N, C)`` fp32."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(tasks={sorted(self.supported_tasks)})"


def pool_mask(batch: PackedBatch) -> torch.Tensor | None:
    """``(N,)`` True where a token counts for MEAN/MAX (not one of a sequence's first ``batch.skip`` tokens, an
    excluded prompt: ``include_prompt: false``); None when every token does."""
    if not batch.skip or not any(batch.skip):
        return None
    positions = batch.positions
    return positions >= positions.new_tensor(batch.skip).repeat_interleave(positions.new_tensor(batch.lengths))


class MeanPool(PoolingMethod):
    """Mean over the tokens of each sequence (Sentence Transformers' ``pooling_mode_mean_tokens``), the
    ``MEAN`` built-in; a plugin subclasses it to reuse its handling of an excluded prompt (:func:`pool_mask`)."""

    name, supported_tasks = "MEAN", SEQUENCE_TASKS
    st_modes = ("mean",)  # Sentence Transformers' pooling mode

    def __call__(self, hidden, batch):
        seq = batch.seq_ids
        mask = pool_mask(batch)
        weights = seq.new_ones(seq.shape, dtype=hidden.dtype) if mask is None else mask.to(hidden.dtype)
        sums = hidden.new_zeros(len(batch.lengths), hidden.shape[1]).index_add_(0, seq, hidden * weights[:, None])
        counts = hidden.new_zeros(len(batch.lengths)).index_add_(0, seq, weights)
        return sums / counts.clamp(min=1e-9)[:, None]


__all__ = ["SEQUENCE_TASKS", "TOKEN_TASKS", "MeanPool", "PoolerInit", "PoolingMethod", "pool_mask"]
