"""Results, shaped like vLLM's: ``PoolingRequestOutput(request_id, prompt_token_ids, outputs, finished)``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class PoolingOutput:
    """The pooled result of one request. ``data`` is a float32 tensor for every task."""

    data: Any

    def __repr__(self) -> str:
        return f"{type(self).__name__}(data=tensor(shape={tuple(self.data.shape)}))"


class EmbeddingOutput(PoolingOutput):
    """``embed``: one vector. ``.embedding`` is it as a list of floats."""

    @property
    def embedding(self) -> list[float]:
        return self.data.tolist()


class TokenEmbeddingOutput(PoolingOutput):
    """``token_embed``: one vector per token, ``data`` of shape ``(tokens, dims)``."""

    @property
    def embeddings(self) -> list[list[float]]:
        return self.data.tolist()


class ClassificationOutput(PoolingOutput):
    """``classify``: class probabilities (raw logits with ``use_activation=False``)."""

    @property
    def probs(self) -> list[float]:
        return self.data.tolist()

    @property
    def num_classes(self) -> int:
        return int(self.data.shape[-1])


class ScoringOutput(PoolingOutput):
    """``score``: one relevance score for a pair of texts."""

    @property
    def score(self) -> float:
        return float(self.data.reshape(-1)[0])


class TokenClassificationOutput(PoolingOutput):
    """``token_classify``: per-token class probabilities (or rewards), ``(tokens, labels)``."""


@dataclass
class PoolingRequestOutput:
    """One input's result: its id, the token ids it was run with, and the task's output."""

    request_id: str
    prompt_token_ids: list[int]
    outputs: PoolingOutput
    finished: bool = True
