"""``POST /v1/embeddings``: OpenAI's embeddings API (float or base64, Matryoshka ``dimensions``)."""

from fastapi import APIRouter, Request

from poolkit.params import PoolingParams
from poolkit.server.protocol import EmbeddingData, EmbeddingRequest, EmbeddingResponse
from poolkit.server.routes.common import encode_vector, get_state, run_prompts, usage

router = APIRouter(tags=["embeddings"])


@router.post("/v1/embeddings", response_model=EmbeddingResponse)
async def create_embeddings(body: EmbeddingRequest, request: Request) -> EmbeddingResponse:
    params = PoolingParams(dimensions=body.dimensions, normalize=body.normalize,
                           truncate_prompt_tokens=body.truncate_prompt_tokens)
    served, tokens, pooled = await run_prompts(get_state(request), body.model, body.input, "embed", params,
                                               body.priority)
    data = [EmbeddingData(index=i, embedding=encode_vector(v, body.encoding_format)) for i, v in enumerate(pooled)]
    return EmbeddingResponse(model=served.name, data=data, usage=usage(tokens))
