"""Per-request pooling parameters (vLLM's ``PoolingParams``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, field_validator


class PoolingParams(BaseModel):
    """What one request wants from the pooler. ``None`` means "the model's configured default".

    - ``dimensions``: Matryoshka truncation of an embedding (only on models that declare it).
    - ``normalize``: L2-normalize embeddings; overrides the pooler config for this request.
    - ``truncate_prompt_tokens``: keep at most this many tokens (special tokens included, cut from
      the end as Sentence Transformers does); ``-1`` means the model's limit; 0 is refused (vLLM's rule).

    Numbers and flags are strict: ``dimensions=True`` or ``"8"`` is a ValidationError, never 1 or 8.
    - ``auto_truncate``: this request's answer to an input longer than ``max_model_len`` when it passes no
      ``truncate_prompt_tokens``: truncate (True) or refuse with a 400 (False); None: the Engine's setting.
      (TEI's ``truncate``, Cohere's ``truncate="NONE"``.)
    - ``truncation_side``: the end truncation cuts, ``"right"`` or ``"left"`` (keeps the last tokens; special
      tokens stay, as the tokenizer's ``truncation_side = "left"`` gives); None: the tokenizer's own side.
      (vLLM's ``truncation_side``, TEI's ``truncation_direction``.)
    - ``task``: the pooling task; ``Engine.encode(task=...)`` sets it.
    - ``use_activation``: classify/score/token_classify apply softmax (>= 2 labels) or sigmoid
      (1 label) unless this is False, which returns raw logits.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    dimensions: StrictInt | None = Field(default=None, gt=0)
    normalize: StrictBool | None = None
    truncate_prompt_tokens: StrictInt | None = Field(default=None, ge=-1)
    auto_truncate: StrictBool | None = None
    truncation_side: Literal["left", "right"] | None = None
    task: str | None = None
    use_activation: StrictBool | None = None

    @field_validator("truncate_prompt_tokens")
    @classmethod
    def _not_zero(cls, value: int | None) -> int | None:
        if value == 0:  # vLLM's rule: -1 or >= 1
            raise ValueError("truncate_prompt_tokens must be -1 (the model's max_model_len) or at least 1, got 0")
        return value
