"""ColBERT late-interaction models in the ``HF_ColBERT`` format (colbertv2.0, answerai-colbert-small-v1).

A BERT encoder (keys under ``bert.`` or ``model.``) and a bias-free projection ``linear.weight`` (or
``colbert_linear.weight``) to the ColBERT dimension. Semantics follow vLLM's ColBERT support for this
format: ``token_embed`` returns every token's projected vector, special tokens included, L2-normalized
(``normalize`` per request as usual); no query markers, no query expansion. ``score`` and ``rerank``
use MaxSim over those vectors (``score_type = "late-interaction"``): each query token's best match
among the document's tokens, summed.
"""

from __future__ import annotations

import torch

from poolkit.batch import PackedBatch
from poolkit.builtin_models.bert import BUFFERS, BertPoolingModel
from poolkit.layers import head_linear
from poolkit.model.interface import ModelInit

PROJECTIONS = ("linear.weight", "colbert_linear.weight")


class HFColBERT(BertPoolingModel):
    """BERT + a bias-free projection per token; scored by MaxSim."""

    default_pooling = "ALL"
    supported_tasks = ("token_embed",)
    score_type = "late-interaction"
    unused_weights = (*BUFFERS, "pooler.", "cls.")

    def build_heads(self, init: ModelInit) -> None:
        w = init.weights
        key = next((k for k in PROJECTIONS if k in w), PROJECTIONS[0])  # a missing one: take() names it
        self.projection = head_linear(init, w.take(key), None)
        dim = next((getattr(init.config, a) for a in ("colbert_dim", "dim", "projection_dim")
                    if getattr(init.config, a, None)), None)
        if dim is not None and dim != self.projection.out_features:
            raise ValueError(f"{key} projects to {self.projection.out_features} dimensions, the config says {dim}")

    def embed_tokens(self, hidden: torch.Tensor, batch: PackedBatch) -> list[torch.Tensor]:
        """Every token's ColBERT vector, one ``(L_i, dim)`` per sequence (token_embed normalizes them)."""
        return list(self.projection(hidden).split(batch.lengths))
