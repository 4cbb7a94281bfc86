"""``POST /v2/embed``: Cohere's Embed v2 API (what ``cohere.ClientV2(base_url=...).embed`` sends).

``input_type`` selects the model's prompt: a prompt of its Sentence Transformers config or of
``config.json``'s ``task_instructions`` named like the input type (``search_query`` -> ``query``...);
a model without prompts embeds every input type alike. ``embedding_types`` come back together, each
defined in :mod:`poolkit.quantize` (int8/uint8 on a fixed per-model scale, calibrated once).

Errors are classified as every route's (:func:`poolkit.server.errors.classify`) and leave in the OpenAI
body, whose ``message`` is Cohere's error shape (``{"message"}``, what the cohere client reads).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from poolkit.inputs import ImagePrompt
from poolkit.params import PoolingParams
from poolkit.quantize import CALIBRATION_TEXTS, EMBEDDING_TYPES, int8_bound, quantize
from poolkit.server.errors import APIError
from poolkit.server.protocol import Checked, ContentPart, new_id
from poolkit.server.routes.common import get_state, json_response, run_prompts

router = APIRouter(tags=["cohere"])

INPUT_TYPES = {  # Cohere's input types -> the prompt names models use for them, in order of preference
    "search_query": ("search_query", "query", "retrieval.query", "retrieval_query"),
    "search_document": ("search_document", "document", "passage", "retrieval.passage", "retrieval_document", "corpus"),
    "classification": ("classification",),
    "clustering": ("clustering", "separation"),
    "image": (),
}


class EmbedInput(BaseModel):
    content: list[ContentPart]  # OpenAI's text / image_url parts, as Cohere's


class EmbedRequest(Checked):
    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    texts: list[str] | None = None
    images: list[str] | None = Field(default=None, description="data: URIs (or URLs the server allows)")
    inputs: list[EmbedInput] | None = None
    input_type: str | None = None
    embedding_types: list[str] | None = None
    output_dimension: StrictInt | None = Field(default=None, gt=0)
    max_tokens: StrictInt | None = Field(default=None, gt=0)
    truncate: Literal["NONE", "START", "END"] = "END"
    priority: StrictInt = 0


def _prompt(engine: Any, input_type: str | None) -> dict[str, str]:
    """``prompt_name`` / ``prompt`` for ``input_type``; a 400 listing the valid ones for an unknown type."""
    if input_type is None:
        return {}
    st = engine.model_config.st
    prompts = dict(st.prompts) if st else {}
    instructions = getattr(engine.model_config.hf_config, "task_instructions", None) or {}
    if input_type not in INPUT_TYPES and input_type not in prompts and input_type not in instructions:
        valid = sorted(set(INPUT_TYPES) | set(prompts) | set(instructions))
        raise APIError(400, f"input_type {input_type!r} is not one of {valid}", "input_type")
    by_case = {k.lower(): k for k in prompts}  # EmbeddingGemma's are "Classification", "Clustering"...
    for name in (input_type, *INPUT_TYPES.get(input_type, ())):
        if name in prompts:
            return {"prompt_name": name}
        if name.lower() in by_case:
            return {"prompt_name": by_case[name.lower()]}
        if name in instructions:
            return {"prompt": instructions[name]}
    return {}


def _inputs(body: EmbedRequest) -> tuple[list[Any], str]:
    """The prompts to embed (texts or image prompts) and the field they came from."""
    given = [name for name in ("texts", "images", "inputs") if getattr(body, name) is not None]
    if len(given) != 1:
        raise APIError(400, f"give exactly one of texts, images or inputs (got {given or 'none'})", "texts")
    field = given[0]
    if field == "texts":
        prompts: list[Any] = list(body.texts)
    elif field == "images":
        prompts = [ImagePrompt(url, from_client=True) for url in body.images]
    else:
        prompts = []
        for i, item in enumerate(body.inputs):
            texts = [c.text for c in item.content if c.type == "text" and c.text]
            images = [c.image_url.url for c in item.content if c.type == "image_url" and c.image_url]
            if len(images) > 1 or (images and texts) or not (images or texts):
                raise APIError(400, f"inputs[{i}]: give one image or text parts (not both, not none)", f"inputs.{i}")
            prompts.append(ImagePrompt(images[0], from_client=True) if images else "\n".join(texts))
    if not prompts:
        raise APIError(400, f"{field} is empty: at least one input is needed", field)
    return prompts, field


def _params(body: EmbedRequest, engine: Any) -> PoolingParams:
    """Matryoshka width and Cohere's truncation: END cuts the end, START keeps the last tokens, NONE refuses."""
    limit = min(body.max_tokens or engine.max_model_len, engine.max_model_len)
    if body.truncate == "NONE":
        return PoolingParams(dimensions=body.output_dimension, truncate_prompt_tokens=body.max_tokens,
                             auto_truncate=False)
    return PoolingParams(dimensions=body.output_dimension, truncate_prompt_tokens=limit,
                         truncation_side="left" if body.truncate == "START" else "right")


async def _bound(state: Any, served: Any, params: PoolingParams) -> float:
    """The model's fixed int8 bound at this output width (calibrated once, then cached on the served model)."""
    key = ("int8_bound", params.dimensions)
    if key not in served.cache:
        calibration = PoolingParams(dimensions=params.dimensions, truncate_prompt_tokens=-1)
        _, outputs = await run_prompts(state, served, CALIBRATION_TEXTS, "embed", calibration)
        served.cache[key] = int8_bound(np.stack([o.outputs.data.numpy() for o in outputs]))
    return served.cache[key]


@router.post("/v2/embed")
async def embed(body: EmbedRequest, request: Request):
    state = get_state(request)
    served = state.model(body.model)
    kinds = list(dict.fromkeys(body.embedding_types or ["float"]))
    unknown = [k for k in kinds if k not in EMBEDDING_TYPES]
    if unknown:
        raise APIError(400, f"embedding_types {unknown} are not among {list(EMBEDDING_TYPES)}", "embedding_types")
    prompts, field = _inputs(body)
    params = _params(body, served.engine)
    prepared, outputs = await run_prompts(state, served, prompts, "embed", params, body.priority,
                                          direct=field == "texts", **_prompt(served.engine, body.input_type))
    vectors = np.stack([o.outputs.data.numpy() for o in outputs])
    bound = await _bound(state, served, params) if {"int8", "uint8"} & set(kinds) else None
    embeddings = {k: quantize(vectors, k, bound) for k in kinds}
    n_images = sum(isinstance(p, ImagePrompt) for p in prompts)
    billed = {"input_tokens": sum(len(t.ids) for t, p in zip(prepared.tokens, prompts) if not isinstance(p, ImagePrompt))}
    if n_images:
        billed["images"] = n_images
    out: dict[str, Any] = {"id": new_id("embed"), "response_type": "embeddings_by_type", "embeddings": embeddings,
                           "meta": {"api_version": {"version": "2"}, "billed_units": billed}}
    if field == "texts":
        out["texts"] = list(body.texts)
    return json_response(out)
