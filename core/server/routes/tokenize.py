"""``POST /tokenize`` and ``POST /detokenize`` with the served model's tokenizer; ``/tokenize`` with TEI's
``inputs`` body instead of ``prompt`` is TEI's tokenize (routes/tei.py), answered in TEI's shape."""

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Body, Request
from fastapi.responses import Response

from poolkit.server.errors import APIError
from poolkit.server.protocol import DetokenizeRequest, DetokenizeResponse, TokenizeRequest, TokenizeResponse
from poolkit.server.protocol_tei import TEITokenizeRequest
from poolkit.server.routes import tei
from poolkit.server.routes.common import get_state, texts_checked

router = APIRouter(tags=["tokenize"])


@router.post("/tokenize", response_model=TokenizeResponse, summary="Tokenize (vLLM prompt, or TEI inputs)",
             openapi_extra=tei.body_schema(TokenizeRequest, TEITokenizeRequest))
async def tokenize_or_tei(data: Annotated[dict[str, Any], Body()], request: Request) -> Any:
    if "inputs" in data and "prompt" not in data:
        return await tei.answer(texts_checked(tei.tokenize), TEITokenizeRequest, data, request)
    return await tokenize(tei.validate_body(TokenizeRequest, data), request)


async def tokenize(body: TokenizeRequest, request: Request) -> Response:
    served = get_state(request).model(body.model)
    engine = served.engine

    def tokenize() -> bytes:  # engine.tokenizer: the tokenizer thread's own
        ids = engine.tokenizer(body.prompt, add_special_tokens=body.add_special_tokens, verbose=False)["input_ids"]
        strs = engine.tokenizer.convert_ids_to_tokens(ids) if body.return_token_strs else None
        # rendered here too (a TokenizeResponse's fields): a 5 MB prompt's ~1.8M ids never reach the event loop
        return orjson.dumps({"count": len(ids), "max_model_len": engine.max_model_len, "tokens": ids,
                             "token_strs": strs})

    return Response(await served.worker.run_in_tokenizer(tokenize), media_type="application/json")


@router.post("/detokenize", response_model=DetokenizeResponse)
async def detokenize(body: DetokenizeRequest, request: Request) -> DetokenizeResponse:
    served = get_state(request).model(body.model)
    vocab = len(served.engine.tokenizer)
    bad = [t for t in body.tokens if not 0 <= t < vocab]
    if bad:
        raise APIError(400, f"Token ids outside the vocabulary [0, {vocab}): {bad[:5]}", "tokens")
    text = await served.worker.run_in_tokenizer(lambda: served.engine.tokenizer.decode(body.tokens))
    return DetokenizeResponse(prompt=text)
