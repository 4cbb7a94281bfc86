"""How a score request becomes pair scores: cross-encoder, bi-encoder (cosine) or late interaction (MaxSim).

:func:`plan_score` validates and tokenizes a score request for the model's score type (what
``Engine.prepare_score`` returns); :class:`ScorePlan` is that request, a :class:`poolkit.request.Prepared`
whose ``finish`` turns the pooled tensors into one :class:`ScoringOutput` per pair.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from poolkit.errors import InvalidRequestError
from poolkit.inputs import score_items
from poolkit.outputs import PoolingRequestOutput, ScoringOutput
from poolkit.params import PoolingParams
from poolkit.request import Prepared, request_id


@dataclass
class ScorePlan(Prepared):
    """A tokenized score request: what to run, and how to turn its pooled outputs into pair scores."""

    kind: str = "cross-encoder"  # cross-encoder | bi-encoder | late-interaction
    first: list[Any] | None = None  # per pair: the first text (late interaction: its key in ``unique``)
    second: list[Any] | None = None
    unique: list[Any] | None = None  # what was embedded, once each: texts (bi-encoder), (role, text) keys (late interaction)

    def finish(self, pooled: list[torch.Tensor]) -> list[PoolingRequestOutput]:
        """One :class:`ScoringOutput` per pair, with the token ids the pair was scored from."""
        return [PoolingRequestOutput(request_id(), ids, ScoringOutput(score))
                for ids, score in zip(self.pair_token_ids(), self.scores(pooled))]

    def scores(self, pooled: list[torch.Tensor]) -> list[torch.Tensor]:
        """One ``(1,)`` score per pair."""
        if self.kind == "cross-encoder":
            return [p.reshape(1) for p in pooled]
        vec = dict(zip(self.unique, pooled))
        if self.kind == "bi-encoder":
            return [cosine(vec[a], vec[b]).reshape(1)
                    for a, b in zip(self.first, self.second)]
        # MaxSim: each query token's best match among the document's tokens, summed
        return [(vec[a] @ vec[b].T).max(dim=-1).values.sum().reshape(1) for a, b in zip(self.first, self.second)]

    def pair_token_ids(self) -> list[list[int]]:
        if self.kind == "cross-encoder":
            return [t.ids for t in self.tokens]
        ids = {text: t.ids for text, t in zip(self.unique, self.tokens)}
        return [ids[a] + ids[b] for a, b in zip(self.first, self.second)]


def prepare_pairs(engine: Any, first: list[str], second: list[str], task: str,
                  pooling_params: PoolingParams | list[PoolingParams] | None = None,
                  truncate_prompt_tokens: int | None = None) -> Prepared:
    """Text pairs tokenized together, as a cross-encoder reads them (the model's pair template, e.g.
    Qwen3-Reranker's, else the tokenizer's pair encoding), after the task checked every params."""
    params = engine.params_for(pooling_params, len(first), truncate_prompt_tokens)
    adapter = engine.checked_task(task, params)
    texts = [engine.model.format_score_pair(a, b) for a, b in zip(first, second)]
    if texts and texts[0] is not None:  # the template carries its own special tokens
        return Prepared(adapter, engine.input_processor(texts, params, add_special_tokens=False), params)
    return Prepared(adapter, engine.input_processor.pairs(first, second, params), params)


def plan_score(engine: Any, text_1: Any, text_2: Any, pooling_params: PoolingParams | None = None, *,
               truncate_prompt_tokens: int | None = None) -> ScorePlan:
    """Validate and tokenize a score request on ``engine`` (a :class:`poolkit.Engine`) for its score type."""
    first, second = score_items(text_1), score_items(text_2)  # texts, or image prompts for a bi-encoder
    if not first or not second:
        name = "text_1" if not first else "text_2"
        raise InvalidRequestError(f"{name} is empty: at least one {'query' if not first else 'document'} is "
                                  f"needed to score", name)
    if len(first) == 1:
        first = first * len(second)
    if len(first) != len(second):
        raise InvalidRequestError("Input lengths must be either 1:1, 1:N or N:N")
    kind = engine.score_type
    if kind == "cross-encoder":
        pairs = prepare_pairs(engine, first, second, "score", pooling_params, truncate_prompt_tokens)
        return ScorePlan(pairs.adapter, pairs.tokens, pairs.params, kind, first, second, [])
    base = (pooling_params or PoolingParams()).model_copy(update={"normalize": True})
    if kind == "bi-encoder":  # embed each distinct text once, normalized
        unique = list(dict.fromkeys(first + second))
        embed = engine.prepare(unique, "embed", base, truncate_prompt_tokens=truncate_prompt_tokens)
        return ScorePlan(embed.adapter, embed.tokens, embed.params, kind, first, second, unique)
    # late interaction: queries and documents may be encoded differently (PyLate): each distinct one once
    queries, docs = list(dict.fromkeys(first)), list(dict.fromkeys(second))
    prompts = engine.model_config.st.prompts if engine.model_config.st else {}
    q = engine.prepare(queries, "token_embed", base, role="query", prompt_name="query" if "query" in prompts else None,
                       truncate_prompt_tokens=truncate_prompt_tokens)
    d = engine.prepare(docs, "token_embed", base, role="document",
                       prompt_name="document" if "document" in prompts else None,
                       truncate_prompt_tokens=truncate_prompt_tokens)
    keys = [("query", t) for t in queries] + [("document", t) for t in docs]
    return ScorePlan(q.adapter, q.tokens + d.tokens, q.params + d.params, kind,
                     [("query", t) for t in first], [("document", t) for t in second], keys)


@dataclass
class RerankResult:
    """One reranked document: its position in the input, its score, and the text if asked for."""

    index: int
    relevance_score: float
    document: str | None = None


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity along the last dim (0 for a zero vector): bi-encoder scores, TEI's /similarity."""
    return torch.nn.functional.cosine_similarity(a, b, dim=-1)


def rerank_order(scores: list[float], top_n: int | None = None) -> list[int]:
    """Document indices by descending score (ties keep input order), the first ``top_n`` if given."""
    return sorted(range(len(scores)), key=lambda i: -scores[i])[: top_n or None]
