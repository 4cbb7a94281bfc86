"""How a score request becomes pair scores: cross-encoder, bi-encoder (cosine) or late interaction (MaxSim)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from poolkit.params import PoolingParams
    from poolkit.tasks import TaskAdapter


@dataclass
class ScorePlan:
    """A tokenized score request: what to run, and how to turn its pooled outputs into pair scores."""

    kind: str  # cross-encoder | bi-encoder | late-interaction
    adapter: TaskAdapter
    tokens: list[Any]
    params: list[PoolingParams]
    first: list[Any]  # per pair: the first text (late interaction: its key in ``unique``)
    second: list[Any]
    unique: list[Any]  # what was embedded, once each: texts (bi-encoder), (role, text) keys (late interaction)

    def finish(self, pooled: list[torch.Tensor]) -> list[torch.Tensor]:
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

    @property
    def num_tokens(self) -> int:
        return sum(len(t.ids) for t in self.tokens)


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
