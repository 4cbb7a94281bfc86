"""SPLADE pooling: vocabulary-sized sparse vectors ``pool_t log(1 + relu(mlm_logits(h_t))))`` per sequence.

Sentence Transformers' ``SpladePooling`` (``pooling_strategy`` max: SPLADE v2 and later; sum: SPLADE
v1) over a masked-LM model's vocabulary logits. The logits are ``(tokens, V)``, 30,522 columns for
BERT: 250 MB for a 2,048-token batch in fp32. So the model's head (``model.mlm_logits``, see
``poolkit.builtin_models.splade``) runs :attr:`SpladePool.chunk_tokens` packed tokens at a time and
each chunk is folded into the ``(B, V)`` result at once: memory is O(chunk x V), whatever the input.

Max pooling reduces the raw logits and applies ``log1p(relu(.))`` to the ``(B, V)`` result only: the
map is non-decreasing, so the max of the mapped values is the mapped max (the same float, too), and
the costly ``log1p`` runs on ``B`` rows instead of every token's.

The methods need the model's head, which a pooling method is not built with: ``EmbedTask`` calls
:meth:`SpladePool.for_model` when it builds the method. The vectors are not normalized by default
(:attr:`SpladePool.default_normalize`; SparseEncoder has no Normalize module); a request's
``normalize: true`` still normalizes them.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from poolkit.batch import PackedBatch
from poolkit.pooling import PoolerInit, PoolingMethod, pool_mask


class SpladePool(PoolingMethod):
    """Base of ``SPLADE_MAX`` / ``SPLADE_SUM``: the model's MLM logits, chunked over tokens, pooled per sequence."""

    supported_tasks: ClassVar[frozenset[str]] = frozenset({"embed"})
    default_normalize: ClassVar[bool] = False
    chunk_tokens: int = 1024
    """Tokens whose ``(chunk, V)`` logits exist at once (125 MB for BERT's vocabulary in fp32); set it on
    the instance (``engine.task("embed").method``). Smaller chunks barely change the speed."""

    def __init__(self, config: Any = None) -> None:
        super().__init__(config)
        self.mlm_logits: Any = None

    @classmethod
    def load(cls, init: PoolerInit) -> SpladePool:
        """Bound to the model's ``mlm_logits``; a model without a masked-LM head is refused (the Engine's build fails)."""
        head = getattr(init.model, "mlm_logits", None)
        if not callable(head):
            raise ValueError(f"Pooling type {cls.name!r} pools a masked-LM head's vocabulary logits; "
                             f"{type(init.model).__name__} has none (served: BertForMaskedLM checkpoints, "
                             f"BertSpladeSparseEmbeddingModel)")
        method = cls(init.config)
        method.mlm_logits = head
        return method

    def __call__(self, hidden: torch.Tensor, batch: PackedBatch) -> torch.Tensor:
        if self.mlm_logits is None:
            raise RuntimeError(f"{self.name} was not bound to a model (SpladePool.load)")
        mask = pool_mask(batch)  # tokens of an excluded prompt (include_prompt false) do not count
        out: torch.Tensor | None = None
        for start in range(0, hidden.shape[0], self.chunk_tokens):
            rows = slice(start, start + self.chunk_tokens)
            logits = self.mlm_logits(hidden[rows]).float()  # (n, V)
            if out is None:
                out = self.initial(len(batch.lengths), logits)
            self.fold(out, logits, batch.seq_ids[rows], None if mask is None else mask[rows])
            del logits  # before the next chunk's are computed: one (chunk, V) block alive at a time
        return self.finish(out)  # (B, V)

    def initial(self, B: int, logits: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def fold(self, out: torch.Tensor, logits: torch.Tensor, seq: torch.Tensor, keep: torch.Tensor | None) -> None:
        """Fold a chunk's logits (its tokens' sequence ids ``seq``) into ``out`` in place."""
        raise NotImplementedError

    def finish(self, out: torch.Tensor) -> torch.Tensor:
        return out


class SpladeMaxPool(SpladePool):
    """``max_t log(1 + relu(logit_t))`` = ``log(1 + relu(max_t logit_t))``: the logits are reduced first."""

    name = "SPLADE_MAX"

    def initial(self, B, logits):
        return logits.new_full((B, logits.shape[1]), float("-inf"))

    def fold(self, out, logits, seq, keep):
        # row by row into the sequence's row: no (n, V) index as scatter_reduce_ would need (twice the
        # logits' memory), and faster than amax over the few rows of a short sequence
        kept = [True] * len(seq) if keep is None else keep.tolist()
        for row, (b, k) in enumerate(zip(seq.tolist(), kept)):
            if k:
                torch.maximum(out[b], logits[row], out=out[b])

    def finish(self, out):
        return out.relu_().log1p_()  # a sequence whose every token is excluded: relu(-inf) = 0


class SpladeSumPool(SpladePool):
    """``sum_t log(1 + relu(logit_t))`` (SPLADE v1)."""

    name = "SPLADE_SUM"

    def initial(self, B, logits):
        return logits.new_zeros(B, logits.shape[1])

    def fold(self, out, logits, seq, keep):
        scores = logits.relu_().log1p_()
        if keep is not None:
            scores = scores.mul_(keep[:, None])
        out.index_add_(0, seq, scores)
