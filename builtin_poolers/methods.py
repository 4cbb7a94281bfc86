"""Pooling methods: reduce packed hidden states ``(N, C)`` to one row per sequence, or keep tokens
(``MEAN`` is :class:`poolkit.pooling.MeanPool`, where plugins subclass it).

Each method declares the tasks it supports (vLLM's pooler design); the task adapter picks one.
Sequences arrive packed (``poolkit.batch.PackedBatch``); ``batch.skip`` leading tokens of a
sequence (an excluded prompt) are left out of MEAN/MAX.
"""

from __future__ import annotations

from poolkit.config import PoolerConfig
from poolkit.pooling import SEQUENCE_TASKS, TOKEN_TASKS, PoolingMethod, pool_mask


class CLSPool(PoolingMethod):
    """The first token of each sequence ([CLS] for BERT)."""

    name, supported_tasks = "CLS", SEQUENCE_TASKS
    st_modes = ("cls",)  # Sentence Transformers' pooling mode

    def __call__(self, hidden, batch):
        return hidden[batch.cu_seqlens[:-1]]


class LastPool(PoolingMethod):
    """The last token of each sequence (decoder embedders: the end-of-text token)."""

    name, supported_tasks = "LAST", SEQUENCE_TASKS
    st_modes = ("lasttoken",)  # Sentence Transformers' pooling mode

    def __call__(self, hidden, batch):
        return hidden[batch.cu_seqlens[1:] - 1]


class MaxPool(PoolingMethod):
    """Element-wise max over the tokens of each sequence (``pooling_mode_max_tokens``)."""

    name, supported_tasks = "MAX", SEQUENCE_TASKS
    st_modes = ("max",)  # Sentence Transformers' pooling mode

    def __call__(self, hidden, batch):
        mask = pool_mask(batch)
        if mask is not None:
            hidden = hidden.masked_fill(~mask[:, None], -1e9)  # as Sentence Transformers masks
        index = batch.seq_ids[:, None].expand_as(hidden)
        out = hidden.new_full((len(batch.lengths), hidden.shape[1]), float("-inf"))
        return out.scatter_reduce_(0, index, hidden, reduce="amax", include_self=True)


class AllPool(PoolingMethod):
    """Every token of each sequence: one ``(L_i, C)`` tensor per sequence."""

    name, supported_tasks = "ALL", TOKEN_TASKS

    def __call__(self, hidden, batch):
        return list(hidden.split(batch.lengths))


class StepPool(PoolingMethod):
    """Tokens equal to the config's ``step_tag_id`` only (process reward models); every token when it is None."""

    name, supported_tasks = "STEP", frozenset({"token_classify"})

    def __init__(self, config: PoolerConfig | None = None) -> None:
        super().__init__(config)
        self.step_tag_id = config.step_tag_id if config is not None else None

    def __call__(self, hidden, batch):
        per_seq = hidden.split(batch.lengths)
        if self.step_tag_id is None:
            return list(per_seq)
        ids = batch.input_ids.split(batch.lengths)
        return [h[i == self.step_tag_id] for h, i in zip(per_seq, ids)]
