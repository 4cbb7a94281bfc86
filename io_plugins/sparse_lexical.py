"""``sparse-lexical``: BGE-M3's sparse (lexical) weights as ``{token: weight}``, in one call.

Runs ``token_classify`` on a model whose token classifier returns one relu weight per token
(``BgeM3EmbeddingModel``: ``relu(sparse_linear(h))``, shape ``(L, 1)``) and does what
FlagEmbedding's ``BGEM3Model._process_token_weights`` does with it: special tokens are dropped,
zero weights are dropped, and a token that occurs several times keeps its largest weight. Keys are
the tokenizer's tokens (``convert_ids_to_tokens``), so no ``/tokenize`` round trip is needed.

Request: a text, or ``{"text": ..., "return_token_ids": false}``. Output: :class:`LexicalWeights`.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from poolkit.io_plugins.interface import IOProcessor
from poolkit.params import PoolingParams


class SparseRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str
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
        if "BgeM3EmbeddingModel" not in arch and labels != 1:
            raise ValueError(f"sparse-lexical needs a model whose token_classify returns one weight per token "
                             f"(BGE-M3: hf_overrides={{'architectures': ['BgeM3EmbeddingModel']}}); got {arch}")
        tok = ctx.tokenizer
        self.special_ids = set(tok.all_special_ids)

    def parse_request(self, raw: Any) -> SparseRequest:
        return SparseRequest(text=raw) if isinstance(raw, str) else super().parse_request(raw)

    def merge_pooling_params(self, params: PoolingParams | None = None) -> PoolingParams:
        # raw relu weights: the token_classify task would apply a sigmoid to a 1-label output
        return super().merge_pooling_params(params).model_copy(update={"use_activation": False})

    def pre_process(self, data: SparseRequest, params: PoolingParams) -> str:
        return data.text

    def post_process(self, outputs, request: SparseRequest) -> LexicalWeights:
        [out] = outputs
        weights = out.outputs.data  # (L, 1)
        if weights.ndim != 2 or weights.shape[1] != 1:
            raise ValueError(f"expected one sparse weight per token, got token_classify output {tuple(weights.shape)}")
        best: dict[int, float] = {}
        for token_id, w in zip(out.prompt_token_ids, weights[:, 0].tolist()):
            if token_id not in self.special_ids and w > 0 and w > best.get(token_id, 0.0):
                best[token_id] = w
        ranked = sorted(best.items(), key=lambda kv: -kv[1])
        tokens = self.ctx.tokenizer.convert_ids_to_tokens([i for i, _ in ranked])
        return LexicalWeights(weights={t: w for t, (_, w) in zip(tokens, ranked)},
                              token_ids=dict(ranked) if request.return_token_ids else None)

    def output_to_response(self, output: LexicalWeights) -> dict[str, Any]:
        return output.model_dump(mode="json", exclude_none=True)
