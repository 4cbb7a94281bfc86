"""``POST /tokenize`` and ``POST /detokenize`` with the served model's tokenizer."""

from fastapi import APIRouter, Request

from poolkit.server.errors import APIError
from poolkit.server.protocol import DetokenizeRequest, DetokenizeResponse, TokenizeRequest, TokenizeResponse
from poolkit.server.routes.common import get_state

router = APIRouter(tags=["tokenize"])


@router.post("/tokenize", response_model=TokenizeResponse)
async def tokenize(body: TokenizeRequest, request: Request) -> TokenizeResponse:
    served = get_state(request).model(body.model)
    tok = served.engine.tokenizer
    ids = await served.worker.run_in_tokenizer(
        lambda: tok(body.prompt, add_special_tokens=body.add_special_tokens, verbose=False)["input_ids"])
    strs = tok.convert_ids_to_tokens(ids) if body.return_token_strs else None
    return TokenizeResponse(count=len(ids), max_model_len=served.engine.max_model_len, tokens=ids, token_strs=strs)


@router.post("/detokenize", response_model=DetokenizeResponse)
async def detokenize(body: DetokenizeRequest, request: Request) -> DetokenizeResponse:
    served = get_state(request).model(body.model)
    vocab = len(served.engine.tokenizer)
    bad = [t for t in body.tokens if not 0 <= t < vocab]
    if bad:
        raise APIError(400, f"Token ids outside the vocabulary [0, {vocab}): {bad[:5]}", "tokens")
    text = await served.worker.run_in_tokenizer(served.engine.tokenizer.decode, body.tokens)
    return DetokenizeResponse(prompt=text)
