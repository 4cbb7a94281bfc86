"""``POST /v1/embeddings``: OpenAI's embeddings API (float or base64, Matryoshka ``dimensions``), and vLLM's
chat form (``messages`` with ``text`` / ``image_url`` parts) for image models such as CLIP and SigLIP."""

from fastapi import APIRouter, Request

from poolkit.inputs import ImagePrompt
from poolkit.params import PoolingParams
from poolkit.server.errors import APIError
from poolkit.server.protocol import ChatMessage, EmbeddingData, EmbeddingRequest, EmbeddingResponse
from poolkit.server.routes.common import encode_vector, get_state, run_prompts, usage

router = APIRouter(tags=["embeddings"])


def messages_prompt(messages: list[ChatMessage]) -> str | ImagePrompt:
    """The one prompt of a chat-form request: its one image, or its texts joined by newlines (CLIP and
    SigLIP embed a text or an image, not both at once; vLLM refuses the mix too)."""
    texts, images = [], []
    for m, message in enumerate(messages):
        for p, part in enumerate([message.content] if isinstance(message.content, str) else message.content):
            where = f"messages.{m}.content.{p}"
            if isinstance(part, str):
                texts.append(part)
            elif part.type == "text":
                if part.text is None:
                    raise APIError(400, f"{where}: a text part needs 'text'", where)
                texts.append(part.text)
            elif part.image_url is None:
                raise APIError(400, f"{where}: an image_url part needs 'image_url': {{'url': ...}}", where)
            else:
                images.append(part.image_url.url)
    if images and texts:
        raise APIError(400, "messages mix text and an image: this endpoint embeds one or the other per request "
                            "(send them as separate requests)", "messages")
    if len(images) > 1:
        raise APIError(400, f"messages hold {len(images)} images; send one image per request", "messages")
    if images:
        return ImagePrompt(images[0], from_client=True)
    if not texts:
        raise APIError(400, "messages have no text or image content", "messages")
    return "\n".join(texts)


@router.post("/v1/embeddings", response_model=EmbeddingResponse)
async def create_embeddings(body: EmbeddingRequest, request: Request) -> EmbeddingResponse:
    if (body.input is None) == (body.messages is None):
        raise APIError(400, "Give either input or messages", "input")
    params = PoolingParams(dimensions=body.dimensions, normalize=body.normalize,
                           truncate_prompt_tokens=body.truncate_prompt_tokens)
    prompts = body.input if body.messages is None else [messages_prompt(body.messages)]
    image = body.messages is not None and isinstance(prompts[0], ImagePrompt)  # decoded off the engine loop
    served, tokens, pooled = await run_prompts(get_state(request), body.model, prompts, "embed", params,
                                               body.priority, direct=not image)
    data = [EmbeddingData(index=i, embedding=encode_vector(v, body.encoding_format, body.embed_dtype, body.endianness))
            for i, v in enumerate(pooled)]
    return EmbeddingResponse(model=served.name, data=data, usage=usage(tokens))
