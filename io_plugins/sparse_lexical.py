"""``sparse-lexical``: sparse (lexical) weights as ``{token: weight}``, in one call.

Two kinds of model are served, told apart by what their pooling produces:

- BGE-M3 (``BgeM3EmbeddingModel``): runs ``token_classify``, whose token classifier returns one relu
  weight per token (``relu(sparse_linear(h))``, shape ``(L, 1)``), and does what FlagEmbedding's
  ``BGEM3Model._process_token_weights`` does with it: special tokens are dropped, zero weights are
  dropped, and a token that occurs several times keeps its largest weight.
- SPLADE (a model whose embed pooling is ``SPLADE_MAX``/``SPLADE_SUM``: a SparseEncoder directory,
  ``BertSpladeSparseEmbeddingModel``): runs ``embed``, whose vector has one weight per vocabulary
  entry, and returns its nonzero entries, as ``SparseEncoder.decode`` does (special tokens included
  when their weight is nonzero).

Keys are the tokenizer's tokens (``convert_ids_to_tokens``), so no ``/tokenize`` round trip is
needed; weights are sorted largest first, and ``top_k`` keeps the largest ones only.

Request: a text, or ``{"text": ..., "top_k": 10, "return_token_ids": false}``. Output: :class:`LexicalWeights`.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field

from poolkit.config import SPLADE_STRATEGIES
from poolkit.io_processor import IOProcessor
from poolkit.params import PoolingParams


class SparseRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str
    top_k: int | None = Field(default=None, gt=0)  # only the k largest weights
    return_token_ids: bool = False  # also key the weights by token id (FlagEmbedding's format)


class LexicalWeights(BaseModel):
    weights: dict[str, float]  # token -> weight, largest first
    token_ids: dict[int, float] | None = None


class SparseLexicalProcessor(IOProcessor[SparseRequest, LexicalWeights]):
    task = "token_classify"
    request_type = SparseRequest

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        labels = getattr(ctx.hf_config, "num_labels", None)
        arch = ctx.model_config.architectures
        self.splade = ctx.pooler_config.pooling_type in SPLADE_STRATEGIES.values()
        if self.splade:
            self.task = "embed"  # the pooled vocabulary vector
        elif "BgeM3EmbeddingModel" not in arch and labels != 1:
            raise ValueError(f"sparse-lexical needs a model whose token_classify returns one weight per token "
                             f"(BGE-M3: hf_overrides={{'architectures': ['BgeM3EmbeddingModel']}}) or a SPLADE "
                             f"model (embed pooling SPLADE_MAX/SPLADE_SUM: a SparseEncoder directory, or "
                             f"'BertSpladeSparseEmbeddingModel'); got {arch}")
        tok = ctx.tokenizer
        self.special_ids = set(tok.all_special_ids)

    def parse_request(self, raw: Any) -> SparseRequest:
        return SparseRequest(text=raw) if isinstance(raw, str) else super().parse_request(raw)

    def merge_pooling_params(self, params: PoolingParams | None = None) -> PoolingParams:
        merged = super().merge_pooling_params(params)
        if self.splade:
            return merged
        # raw relu weights: the token_classify task would apply a sigmoid to a 1-label output
        return merged.model_copy(update={"use_activation": False})

    def pre_process(self, data: SparseRequest, params: PoolingParams) -> str:
        return data.text

    def post_process(self, outputs, request: SparseRequest) -> LexicalWeights:
        [out] = outputs
        ranked = self._vocabulary(out.outputs.data) if self.splade else self._per_token(out)
        ranked = ranked[:request.top_k] if request.top_k is not None else ranked
        tokens = self.ctx.tokenizer.convert_ids_to_tokens([i for i, _ in ranked])
        return LexicalWeights(weights={t if t is not None else str(i): w for t, (i, w) in zip(tokens, ranked)},
                              token_ids=dict(ranked) if request.return_token_ids else None)

    @staticmethod
    def _vocabulary(vector: torch.Tensor) -> list[tuple[int, float]]:
        """SPLADE: the nonzero entries of a ``(V,)`` vector, largest first (ties: lower token id first)."""
        if vector.ndim != 1:
            raise ValueError(f"expected one vocabulary-sized vector, got embed output {tuple(vector.shape)}")
        ids = torch.nonzero(vector > 0).flatten()
        weights = vector[ids]
        order = torch.argsort(weights, descending=True, stable=True)
        return list(zip(ids[order].tolist(), weights[order].tolist()))

    def _per_token(self, out) -> list[tuple[int, float]]:
        """BGE-M3: each token's weight, special and zero ones dropped, a repeated token's largest kept."""
        weights = out.outputs.data  # (L, 1)
        if weights.ndim != 2 or weights.shape[1] != 1:
            raise ValueError(f"expected one sparse weight per token, got token_classify output {tuple(weights.shape)}")
        best: dict[int, float] = {}
        for token_id, w in zip(out.prompt_token_ids, weights[:, 0].tolist()):
            if token_id not in self.special_ids and w > 0 and w > best.get(token_id, 0.0):
                best[token_id] = w
        return sorted(best.items(), key=lambda kv: -kv[1])

    def output_to_response(self, output: LexicalWeights) -> dict[str, Any]:
        return output.model_dump(mode="json", exclude_none=True)
