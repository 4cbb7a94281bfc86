"""``POST /v1/embeddings``: OpenAI's embeddings API (float or base64, Matryoshka ``dimensions``), and vLLM's
chat form (``messages``: a conversation through the chat template, or an image for CLIP and SigLIP)."""

from fastapi import APIRouter, Request

from poolkit.inputs import ImagePrompt
from poolkit.params import PoolingParams
from poolkit.server.errors import APIError
from poolkit.server.messages import messages_prompt
from poolkit.server.protocol import EmbeddingRequest, EmbeddingResponse
from poolkit.server.routes.common import encode_vector, get_state, json_response, run_prompts, usage

router = APIRouter(tags=["embeddings"])


@router.post("/v1/embeddings", response_model=EmbeddingResponse)
async def create_embeddings(body: EmbeddingRequest, request: Request):
    if (body.input is None) == (body.messages is None):
        raise APIError(400, "Give either input or messages", "input")
    empty = next((i for i, t in enumerate([body.input] if isinstance(body.input, str) else body.input or [])
                  if t == ""), None)
    if empty is not None:  # OpenAI's rule (its API answers a 400 too); Engine.embed("") embeds the special tokens
        where = "input" if isinstance(body.input, str) else f"input[{empty}]"
        raise APIError(400, f"{where} is an empty string: each input must hold at least one character", "input")
    params = PoolingParams(dimensions=body.dimensions, normalize=body.normalize,
                           truncate_prompt_tokens=body.truncate_prompt_tokens,
                           truncation_side=body.truncation_side)
    state = get_state(request)
    served = state.model(body.model)
    prompts = body.input
    if body.messages is not None:  # the chat template and its tokenizing on the tokenizer thread, not the event loop
        prompts = [await served.worker.run_in_tokenizer(messages_prompt, body.messages, served.engine,
                                                        body.add_generation_prompt, body.continue_final_message)]
    image = body.messages is not None and isinstance(prompts[0], ImagePrompt)  # decoded off the engine loop
    prepared, outputs = await run_prompts(state, served, prompts, "embed", params, body.priority, direct=not image,
                                          prompt_name=body.prompt_name)
    out = EmbeddingResponse(model=served.name, data=[], usage=usage(prepared)).model_dump()
    out["data"] = [{"index": i, "object": "embedding",
                    "embedding": encode_vector(o.outputs.data, body.encoding_format, body.embed_dtype, body.endianness)}
                   for i, o in enumerate(outputs)]
    return json_response(out)  # EmbeddingResponse's shape, vectors written by orjson
