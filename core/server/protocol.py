"""Request and response schemas, with the field names of vLLM's OpenAI-compatible server.

Numbers and booleans are strict (``"dimensions": true`` or ``"8"`` is a 400 naming the field, never 1 or 8),
and every text of a request is checked once, here, for characters no UTF-8 text can hold (:class:`Checked`).
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, field_validator
from pydantic_core import PydanticCustomError

from poolkit.errors import InvalidRequestError, unencodable
from poolkit.inputs import text_error
from poolkit.params import Dimensions, TruncatePromptTokens

Input = str | list[str] | list[StrictInt] | list[list[StrictInt]]
TEXT_ERROR = "invalid_text"  # the pydantic error type of a text that cannot be encoded (server/errors.py names it)


def _first_unencodable(value: Any, path: str) -> tuple[str, str, int] | None:
    """(path, text, index) of the first text under ``value`` with a character UTF-8 cannot encode."""
    if isinstance(value, str):
        at = unencodable(value)
        return None if at is None else (path, value, at)
    if isinstance(value, (list, tuple)):
        if value and isinstance(value[0], int):  # token ids
            return None
        for i, v in enumerate(value):
            if (found := _first_unencodable(v, f"{path}[{i}]")) is not None:
                return found
    elif isinstance(value, BaseModel):
        for name, v in value:
            if (found := _first_unencodable(v, f"{path}.{name}")) is not None:
                return found
    elif isinstance(value, dict):  # a plugin's free-form data
        for k, v in value.items():
            if (found := _first_unencodable(k, f"{path} key") or _first_unencodable(v, f"{path}.{k}")) is not None:
                return found
    return None


class Checked(BaseModel):
    """A request body whose every text (nested ones too: messages, documents) is checked for lone UTF-16
    surrogates: the tokenizer cannot read them, and an answer quoting them cannot be encoded. One
    ``isascii`` per text (constant time in CPython), a UTF-8 encode only for non-ASCII text."""

    @field_validator("*", mode="after")
    @classmethod
    def _encodable(cls, value: Any, info: Any) -> Any:
        found = _first_unencodable(value, info.field_name)
        if found is not None:
            path, text, at = found
            raise PydanticCustomError(TEXT_ERROR, "{reason}", {"reason": text_error(text, at, path)})
        return value


def check_texts(body: BaseModel) -> None:
    """The check :class:`Checked` runs, on a body validated by another schema (TEI's, on a route shared with
    another API): a text that cannot be encoded is an InvalidRequestError naming its field."""
    for name, value in body:
        if (found := _first_unencodable(value, name)) is not None:
            path, text, at = found
            raise InvalidRequestError(text_error(text, at, path), name)


class Request(Checked):
    model_config = ConfigDict(extra="ignore")  # OpenAI clients send extra fields (user, extra_body...)

    model: str | None = None
    truncate_prompt_tokens: TruncatePromptTokens | None = Field(
        default=None, description="keep at most this many tokens (-1: the model's max_model_len; 0 is refused)")
    truncation_side: Literal["left", "right"] | None = Field(
        default=None, description="vLLM's: which end truncation cuts ('left' keeps the last tokens)")
    priority: StrictInt = Field(default=0, description="Scheduling priority (vLLM's): lower is served first; "
                                                       "requests of equal priority share forward passes fairly")


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


class ListResponse(BaseModel):
    """The envelope of vLLM's list responses; each route's subclass sets the id prefix and narrows ``data``."""

    id: str
    object: Literal["list"] = "list"
    created: int = Field(default_factory=now)
    model: str
    data: list[Any]
    usage: Usage


# --- /v1/embeddings ----------------------------------------------------------------------------


class ImageURL(BaseModel):
    url: str = Field(description="a data: URI (base64), or an http(s):// / file:// URL the server allows")


class ContentPart(BaseModel):
    """One part of a chat message's content (OpenAI's ``text`` and ``image_url`` parts)."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["text", "image_url"]
    text: str | None = None
    image_url: ImageURL | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: str
    content: str | list[ContentPart]


class EmbeddingRequest(Request):
    input: Input | None = None
    messages: list[ChatMessage] | None = Field(default=None, description="vLLM's chat form instead of input: one "
                                               "embedding of the conversation (the chat template) or of its image")
    add_generation_prompt: StrictBool = False  # vLLM's chat-form defaults
    continue_final_message: StrictBool = False
    prompt_name: str | None = Field(default=None, description="A prompt of the model's Sentence Transformers "
                                    "config to prepend ('query', 'document'...), as SentenceTransformer.encode")
    encoding_format: Literal["float", "base64"] = "float"
    embed_dtype: Literal["float32", "float16", "bfloat16"] = Field(
        default="float32", description="vLLM's: the element type of base64 vectors")
    endianness: Literal["native", "little", "big"] = Field(
        default="native", description="vLLM's: the byte order of base64 vectors")
    dimensions: Dimensions | None = None
    user: str | None = None
    normalize: StrictBool | None = None


class EmbeddingData(BaseModel):
    index: int
    object: Literal["embedding"] = "embedding"
    embedding: list[float] | str


class EmbeddingResponse(ListResponse):
    id: str = Field(default_factory=lambda: new_id("embd"))
    data: list[EmbeddingData]


# --- /pooling ----------------------------------------------------------------------------------


class PoolingRequest(Request):
    input: Input | None = None
    messages: list[ChatMessage] | None = Field(default=None, description="vLLM's chat form instead of input")
    add_generation_prompt: StrictBool = False
    continue_final_message: StrictBool = False
    data: Any = None  # the plugin task's own input, parsed by its IO processor
    task: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    embed_dtype: Literal["float32", "float16", "bfloat16"] = Field(
        default="float32", description="vLLM's: the element type of base64 vectors")
    endianness: Literal["native", "little", "big"] = Field(
        default="native", description="vLLM's: the byte order of base64 vectors")
    dimensions: Dimensions | None = None
    normalize: StrictBool | None = None
    use_activation: StrictBool | None = None
    prompt_name: str | None = Field(default=None, description="A prompt of the model's Sentence Transformers "
                                    "config to prepend (PyLate ColBERT: 'query' or 'document')")


class PoolingData(BaseModel):
    index: int
    object: Literal["pooling"] = "pooling"
    data: Any


class PoolingResponse(ListResponse):
    id: str = Field(default_factory=lambda: new_id("pool"))
    data: list[PoolingData]


# --- /classify ---------------------------------------------------------------------------------


class ClassificationRequest(Request):
    input: Input
    use_activation: StrictBool | None = None


class ClassificationData(BaseModel):
    index: int
    label: str | None
    probs: list[float]
    num_classes: int


class ClassificationResponse(ListResponse):
    id: str = Field(default_factory=lambda: new_id("classify"))
    data: list[ClassificationData]


# --- /score and /rerank -------------------------------------------------------------------------


class ScoreRequest(Request):
    """vLLM's ``text_1``/``text_2`` form, or the newer ``queries``/``documents`` form."""

    text_1: str | list[str] | None = None
    text_2: str | list[str] | None = None
    queries: str | list[str] | None = None
    documents: str | list[str] | None = None
    use_activation: StrictBool | None = None


class ScoreData(BaseModel):
    index: int
    object: Literal["score"] = "score"
    score: float


class ScoreResponse(ListResponse):
    id: str = Field(default_factory=lambda: new_id("score"))
    data: list[ScoreData]


class RerankDocumentIn(BaseModel):
    text: str


class RerankRequest(Request):
    """Jina / Cohere rerank request."""

    query: str
    documents: list[str | RerankDocumentIn]
    top_n: StrictInt | None = Field(default=None, ge=0)
    return_documents: StrictBool = True


class RerankDocument(BaseModel):
    text: str


class RerankResult(BaseModel):
    index: int
    relevance_score: float
    document: RerankDocument | None = None


class RerankUsage(BaseModel):
    total_tokens: int


class RerankResponse(BaseModel):
    id: str = Field(default_factory=lambda: new_id("rerank"))
    model: str
    usage: RerankUsage
    results: list[RerankResult]


# --- /tokenize, /detokenize, /v1/models ----------------------------------------------------------


class TokenizeRequest(Request):
    prompt: str
    add_special_tokens: StrictBool = True
    return_token_strs: StrictBool = False  # vLLM's: also the token strings, as token_strs


class TokenizeResponse(BaseModel):
    count: int
    max_model_len: int
    tokens: list[StrictInt]
    token_strs: list[str] | None = None


class DetokenizeRequest(Request):
    tokens: list[StrictInt]


class DetokenizeResponse(BaseModel):
    prompt: str


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(default_factory=now)
    owned_by: str = "poolkit"
    root: str
    max_model_len: int
    tasks: list[str]


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
