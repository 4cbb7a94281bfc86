"""Request and response schemas, with the field names of vLLM's OpenAI-compatible server."""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Input = str | list[str] | list[int] | list[list[int]]


class Request(BaseModel):
    model_config = ConfigDict(extra="ignore")  # OpenAI clients send extra fields (user, extra_body...)

    model: str | None = None
    truncate_prompt_tokens: int | None = Field(default=None, ge=-1)
    truncation_side: Literal["left", "right"] | None = Field(
        default=None, description="vLLM's: which end truncation cuts ('left' keeps the last tokens)")
    priority: int = Field(default=0, description="Scheduling priority (vLLM's): lower is served first; "
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
    add_generation_prompt: bool = False  # vLLM's chat-form defaults
    continue_final_message: bool = False
    prompt_name: str | None = Field(default=None, description="A prompt of the model's Sentence Transformers "
                                    "config to prepend ('query', 'document'...), as SentenceTransformer.encode")
    encoding_format: Literal["float", "base64"] = "float"
    embed_dtype: Literal["float32", "float16", "bfloat16"] = Field(
        default="float32", description="vLLM's: the element type of base64 vectors")
    endianness: Literal["native", "little", "big"] = Field(
        default="native", description="vLLM's: the byte order of base64 vectors")
    dimensions: int | None = Field(default=None, gt=0)
    user: str | None = None
    normalize: bool | None = None


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
    add_generation_prompt: bool = False
    continue_final_message: bool = False
    data: Any = None  # the plugin task's own input, parsed by its IO processor
    task: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    embed_dtype: Literal["float32", "float16", "bfloat16"] = Field(
        default="float32", description="vLLM's: the element type of base64 vectors")
    endianness: Literal["native", "little", "big"] = Field(
        default="native", description="vLLM's: the byte order of base64 vectors")
    dimensions: int | None = Field(default=None, gt=0)
    normalize: bool | None = None
    use_activation: bool | None = None
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
    use_activation: bool | None = None


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
    use_activation: bool | None = None


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
    top_n: int | None = Field(default=None, ge=0)
    return_documents: bool = True


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
    add_special_tokens: bool = True
    return_token_strs: bool = False  # vLLM's: also the token strings, as token_strs


class TokenizeResponse(BaseModel):
    count: int
    max_model_len: int
    tokens: list[int]
    token_strs: list[str] | None = None


class DetokenizeRequest(Request):
    tokens: list[int]


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
