"""Per-request pooling parameters (vLLM's ``PoolingParams``)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StrictInt
from pydantic_core import PydanticCustomError


def _keeps_tokens(value: int) -> int:
    """vLLM's rule: -1 (the model's limit) or at least 1; 0 would keep no tokens at all."""
    if value == 0:
        raise PydanticCustomError("truncate_prompt_tokens", "must be -1 (the model's max_model_len) or at least 1, "
                                  "got 0 (which would keep no tokens)")
    return value


# Each field's rule, defined once: PoolingParams and the request schemas of every API declare these.
Dimensions = Annotated[StrictInt, Field(gt=0)]
TruncatePromptTokens = Annotated[StrictInt, Field(ge=-1), AfterValidator(_keeps_tokens)]


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

    dimensions: Dimensions | None = None
    normalize: StrictBool | None = None
    truncate_prompt_tokens: TruncatePromptTokens | None = None
    auto_truncate: StrictBool | None = None
    truncation_side: Literal["left", "right"] | None = None
    task: str | None = None
    use_activation: StrictBool | None = None
