"""Hugging Face Text Embeddings Inference's HTTP API, as TEI's router serves it (router/src/http/server.rs).

``POST /`` (and SageMaker's ``/invocations``) runs the model's default task, picked by model type as
TEI picks it: a reranker (a 1-label classifier) reranks, a classifier predicts, a SPLADE model embeds
sparse, any other model embeds. An embedding model's ``/`` also takes the sentence-similarity body
(``inputs: {source_sentence, sentences}``), which ``huggingface_hub.InferenceClient.sentence_similarity``
posts there. ``/rerank`` and ``/tokenize`` are shared with another API: their routers send a body with
TEI's ``texts`` / ``inputs`` here (:func:`answer`).

Errors leave in TEI's body, ``{"error", "error_type"}``, with TEI's status per type (:data:`STATUS`);
the guard middleware's own (401, 413, ...) too, on the paths in :data:`PATHS`.

TEI serves one model; poolkit may serve several. A TEI request picks one by its body's ``model``, else
the ``?model=`` query parameter, else the ``X-Model`` header (:func:`model_name`), else the first served:
``huggingface_hub.InferenceClient(base_url="http://host:port/?model=NAME")`` or
``InferenceClient(base_url=..., headers={"X-Model": "NAME"})`` reaches model NAME (the client sends no
model name of its own to a ``base_url``).
"""

from __future__ import annotations

import itertools
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError

from poolkit.errors import InvalidRequestError, UnsupportedTaskError
from poolkit.params import PoolingParams
from poolkit.request import Prepared
from poolkit.scoring import rerank_order
from poolkit.server.errors import APIError, request_id
from poolkit.server.protocol_tei import (Prediction, SimilarityParameters, SparseValue, TEIDecodeRequest,
                                         TEIEmbedAllRequest, TEIEmbedRequest, TEIEmbedSparseRequest,
                                         TEIPredictRequest, TEIRerankRequest, TEISimilarityRequest,
                                         TEITokenizeRequest)
from poolkit.server.routes.common import get_state, json_response, run_prompts
from poolkit.server.routes.score import run_score

logger = logging.getLogger("poolkit.server")

# --- errors -----------------------------------------------------------------------------------------

STATUS = {"validation": 422, "tokenizer": 422, "empty": 400, "backend": 424, "overloaded": 429, "unhealthy": 503}
EMPTY = "`inputs` cannot be empty"
MODEL_HEADER = "x-model"  # a TEI request's model when neither its body nor ?model= names one


def error_type(status: int) -> str:
    """TEI's ``error_type`` for an HTTP status that is not one of TEI's own (401, 404, 405, 413, 500...)."""
    return {429: "overloaded", 503: "unhealthy", 500: "backend", 424: "backend"}.get(status, "validation")


def error_body(status: int, message: str) -> dict[str, str]:
    return {"error": message, "error_type": error_type(status)}


def error_response(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    """An error of another layer (the guard middleware, routing) in TEI's shape, with its own status."""
    return JSONResponse(error_body(status, message), status_code=status, headers=headers)


def model_name(request: Request, given: Any = None) -> str | None:
    """The served model a TEI request names: its body's ``model``, else ``?model=``, else the X-Model header;
    None (the first served model) if none does."""
    if isinstance(given, str):
        return given
    return request.query_params.get("model") or request.headers.get(MODEL_HEADER) or None


class TEIError(Exception):
    """An error of one of TEI's types (a key of :data:`STATUS`)."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type, self.message = error_type, message


def _validation_message(errors: list[dict]) -> str:
    """axum's wording for a body serde refuses, naming the field (union-member labels left out)."""
    first = errors[0] if errors else {}
    if first.get("type") == "json_invalid":
        return f"Failed to parse the request body as JSON: {first.get('ctx', {}).get('error', first.get('msg'))}"
    where = ".".join(str(p) for p in first.get("loc", ())
                     if p != "body" and not (isinstance(p, str) and ("[" in p or p in ("str", "int"))))
    return f"Failed to deserialize the JSON body into the target type: {where + ': ' if where else ''}" \
           f"{first.get('msg', 'invalid body')}"


def tei_error(exc: Exception, request: Request) -> JSONResponse:
    """``exc`` as TEI answers it. A model that does not serve the task is TEI's ``backend`` (424), bad input
    ``validation`` (422); anything unforeseen is a bug: logged, and a 500 naming only the request id."""
    headers = None
    if isinstance(exc, TEIError):
        kind, message = exc.error_type, exc.message
    elif isinstance(exc, RequestValidationError):
        kind, message = "validation", _validation_message(exc.errors())
    elif isinstance(exc, UnsupportedTaskError):
        kind, message = "backend", exc.message
    elif isinstance(exc, InvalidRequestError):
        kind, message = "validation", exc.message
    elif isinstance(exc, APIError):
        kind = {429: "overloaded", 503: "unhealthy"}.get(exc.status, "validation")
        message, headers = exc.message, exc.headers
    else:
        rid = request_id(request)
        logger.error("request %s (%s %s) failed with a server error", rid, request.method, request.url.path,
                     exc_info=(type(exc), exc, exc.__traceback__))
        return JSONResponse({"error": f"Internal server error (request id {rid}); the server log has the details",
                             "error_type": "backend"}, status_code=500)
    return JSONResponse({"error": message, "error_type": kind}, status_code=STATUS[kind], headers=headers)


class TEIRoute(APIRoute):
    """A route whose errors, body validation and a wrong method included, leave in TEI's shape."""

    async def handle(self, scope: dict, receive: Any, send: Any) -> None:
        if self.methods and scope["method"] not in self.methods:
            allowed = ", ".join(sorted(self.methods))
            response = error_response(405, f"Method {scope['method']} is not allowed on {scope['path']}; use {allowed}",
                                      {"Allow": allowed})
            return await response(scope, receive, send)
        return await super().handle(scope, receive, send)

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as exc:
                return tei_error(exc, request)

        return route


async def answer(handler: Any, model: type[BaseModel], data: dict, request: Request) -> Response:
    """``handler`` on ``data`` validated as ``model``, for a route shared with another API: errors in TEI's shape."""
    try:
        return await handler(validate_body(model, data), request)
    except Exception as exc:
        return tei_error(exc, request)


def validate_body(model: type[BaseModel], data: dict) -> BaseModel:
    """``data`` as ``model``; a bad body raises what FastAPI's own body validation raises (the same 400)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]) from None


def body_schema(*models: type[BaseModel]) -> dict:
    """``openapi_extra`` for a route whose dict body is one of ``models`` (their nested models are in the
    schema's components already: other routes take them)."""
    schemas = [{k: v for k, v in m.model_json_schema(ref_template="#/components/schemas/{model}").items()
                if k != "$defs"} for m in models]
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": {"oneOf": schemas}}}}}


# --- requests -> engine calls --------------------------------------------------------------------------


def truncation(body: Any) -> dict[str, Any]:
    """TEI's ``truncate`` / ``truncation_direction`` as PoolingParams fields (None: the server's auto-truncate)."""
    return {"auto_truncate": body.truncate, "truncation_side": body.truncation_direction.lower()}


def check_batch(state: Any, n: int, empty: str = EMPTY) -> None:
    if n == 0:
        raise TEIError("empty", empty)
    if n > state.limits.max_client_batch_size:
        limit = state.limits.max_client_batch_size
        raise TEIError("validation", f"batch size {n} > maximum allowed batch size {limit}")


def prompts(state: Any, inputs: Any) -> list[Any]:
    """TEI's ``inputs``: a text, a list of token ids, or a batch of them; none of them empty."""
    one = isinstance(inputs, str) or (bool(inputs) and all(isinstance(t, int) for t in inputs))
    items = [inputs] if one else list(inputs)
    check_batch(state, len(items))
    if any(len(p) == 0 for p in items):
        raise TEIError("empty", EMPTY)
    return items


def model_type(engine: Any) -> dict[str, Any]:
    """TEI's ``model_type`` of ``/info``, which also picks what ``POST /`` does."""
    if "classify" in engine.supported_tasks:
        n = engine.model.num_labels
        labels = {i: engine.id2label.get(i, f"LABEL_{i}") for i in range(n)}
        classes = {"id2label": {str(i): v for i, v in labels.items()}, "label2id": {v: i for i, v in labels.items()}}
        return {"reranker" if n == 1 else "classifier": classes}
    pooling = str(engine.pooler_config.pooling_type or "").upper()
    name = "splade" if pooling.startswith("SPLADE") else {"LAST": "last_token"}.get(pooling, pooling.lower())
    return {"embedding": {"pooling": name}}


def is_sparse(engine: Any) -> bool:
    return model_type(engine) == {"embedding": {"pooling": "splade"}}


def sequences(inputs: Any) -> tuple[bool, list[tuple[str, ...]]]:
    """TEI's PredictInput: whether it is a batch, and its sequences (a text or a pair each)."""
    expected = ("inputs must be a string, a pair of strings [string, string] or a batch of mixed strings and "
                "pairs [[string], [string, string], ...]")
    if isinstance(inputs, str):
        return False, [(inputs,)]
    if inputs and all(isinstance(s, str) for s in inputs):
        if len(inputs) > 2:
            raise TEIError("validation", f"{expected}; got a list of {len(inputs)} strings")
        return False, [tuple(inputs)]
    if not inputs or any(len(s) not in (1, 2) for s in inputs):
        raise TEIError("validation", expected)
    return True, [tuple(s) for s in inputs]


def predict_tokens(engine: Any, seqs: list[tuple[str, ...]], params: PoolingParams) -> Prepared:
    """The classify task's inputs: texts tokenized as ``Engine.prepare`` does, pairs as ``Engine.prepare_score``
    tokenizes a cross-encoder's (``InputProcessor.pairs``)."""
    adapter = engine.task("classify")  # a model without a classifier head: UnsupportedTaskError, TEI's 424
    tokens: list[Any] = [None] * len(seqs)
    for size in (1, 2):
        idx = [i for i, s in enumerate(seqs) if len(s) == size]
        if not idx:
            continue
        if size == 1:
            done = engine.prepare([seqs[i][0] for i in idx], "classify", params).tokens
        else:
            done = engine.input_processor.pairs([seqs[i][0] for i in idx], [seqs[i][1] for i in idx],
                                                [params] * len(idx))
        for i, t in zip(idx, done):
            tokens[i] = t
    return Prepared(adapter, tokens, [params] * len(seqs))


def simple_tokens(tok: Any, text: str, add_special_tokens: bool) -> list[dict[str, Any]]:
    """TEI's tokens: a special token by its token string, any other by the text it covers, with byte offsets
    (TEI's tokenizer counts bytes; a Python fast tokenizer counts characters)."""
    enc = tok(text, add_special_tokens=add_special_tokens, return_offsets_mapping=tok.is_fast,
              return_special_tokens_mask=True, verbose=False)
    ids, offsets = enc["input_ids"], enc.get("offset_mapping") or [None] * len(enc["input_ids"])
    at = list(itertools.accumulate((len(c.encode()) for c in text), initial=0))  # char index -> byte offset
    out = []
    for i, s, special, off in zip(ids, tok.convert_ids_to_tokens(ids), enc["special_tokens_mask"], offsets):
        if special or off is None:
            out.append({"id": i, "text": s, "special": bool(special), "start": None, "stop": None})
        else:
            a, b = off
            out.append({"id": i, "text": text[a:b], "special": False, "start": at[a], "stop": at[b]})
    return out


# --- routes ----------------------------------------------------------------------------------------------

router = APIRouter(tags=["tei"], route_class=TEIRoute)


@router.post("/embed", response_model=list[list[float]])
async def embed(body: TEIEmbedRequest, request: Request) -> Response:
    state = get_state(request)
    params = PoolingParams(normalize=body.normalize, dimensions=body.dimensions, **truncation(body))
    texts = prompts(state, body.inputs)
    _, outputs = await run_prompts(state, state.model(model_name(request, body.model)), texts, "embed", params,
                                   prompt_name=body.prompt_name)
    return json_response([o.outputs.data.numpy() for o in outputs])


@router.post("/embed_sparse", response_model=list[list[SparseValue]])
async def embed_sparse(body: TEIEmbedSparseRequest, request: Request) -> Response:
    """A SPLADE model's vocabulary-sized vectors as their nonzero entries."""
    state = get_state(request)
    name = model_name(request, body.model)
    served = state.model(name)
    if not is_sparse(served.engine):
        raise TEIError("backend", "Model is not an embedding model with SPLADE pooling")
    _, outputs = await run_prompts(state, served, prompts(state, body.inputs), "embed",
                                   PoolingParams(**truncation(body)), prompt_name=body.prompt_name)
    out = []
    for v in (o.outputs.data for o in outputs):
        nz = v.nonzero().flatten()
        out.append([{"index": i, "value": x} for i, x in zip(nz.tolist(), v[nz].tolist())])
    return json_response(out)


@router.post("/embed_all", response_model=list[list[list[float]]])
async def embed_all(body: TEIEmbedAllRequest, request: Request) -> Response:
    """Every token's embedding, not normalized (TEI returns the last hidden states as they are)."""
    state = get_state(request)
    params = PoolingParams(normalize=False, **truncation(body))
    texts = prompts(state, body.inputs)
    _, outputs = await run_prompts(state, state.model(model_name(request, body.model)), texts, "token_embed",
                                   params, prompt_name=body.prompt_name)
    return json_response([o.outputs.data.numpy() for o in outputs])


@router.post("/predict", response_model=list[Prediction] | list[list[Prediction]])
async def predict(body: TEIPredictRequest, request: Request) -> Response:
    """Every label's score, highest first; a batch gets one list per sequence."""
    state = get_state(request)
    batch, seqs = sequences(body.inputs)
    check_batch(state, len(seqs))
    if any(not any(s) for s in seqs):  # TEI: a pair is empty only if both texts are
        raise TEIError("empty", EMPTY)
    served = state.model(model_name(request, body.model))
    params = PoolingParams(use_activation=False if body.raw_scores else None, **truncation(body))
    prepared, pooled = await served.worker.run(predict_tokens, served.engine, seqs, params)
    labels = served.engine.id2label
    out = [[{"score": float(v[i]), "label": labels.get(i, f"LABEL_{i}")} for i in rerank_order(v.tolist())]
           for v in (o.outputs.data for o in prepared.finish(pooled))]
    return JSONResponse(out if batch else out[0])


async def rerank(body: TEIRerankRequest, request: Request) -> Response:
    """TEI's ``/rerank`` (a ``texts`` body; routes/rerank.py sends it here): ranks, highest score first."""
    state = get_state(request)
    check_batch(state, len(body.texts), "`texts` cannot be empty")
    params = PoolingParams(use_activation=False if body.raw_scores else None, **truncation(body))
    _, scores = await run_score(state, state.model(model_name(request, body.model)), [body.query], body.texts, params)
    return JSONResponse([{"index": i, **({"text": body.texts[i]} if body.return_text else {}), "score": scores[i]}
                         for i in rerank_order(scores)])


@router.post("/similarity", response_model=list[float])
async def similarity(body: TEISimilarityRequest, request: Request) -> Response:
    """Cosine similarity of ``source_sentence``'s embedding to each sentence's."""
    state = get_state(request)
    p = body.parameters or SimilarityParameters()
    if not body.inputs.sentences:
        raise TEIError("empty", "`inputs.sentences` cannot be empty")
    texts = prompts(state, [body.inputs.source_sentence, *body.inputs.sentences])
    params = PoolingParams(normalize=False, **truncation(p))
    _, outputs = await run_prompts(state, state.model(model_name(request, body.model)), texts, "embed", params,
                                   prompt_name=p.prompt_name)
    pooled = [o.outputs.data for o in outputs]
    src = pooled[0]
    return JSONResponse([float(src @ v) / max(float(src.norm() * v.norm()), 1e-12) for v in pooled[1:]])


async def tokenize(body: TEITokenizeRequest, request: Request) -> Response:
    """TEI's ``/tokenize`` (an ``inputs`` body; routes/tokenize.py sends it here), the prompt prepended."""
    state = get_state(request)
    texts = [body.inputs] if isinstance(body.inputs, str) else body.inputs
    check_batch(state, len(texts))
    if any(not t for t in texts):
        raise TEIError("empty", EMPTY)
    served = state.model(model_name(request, body.model))
    engine = served.engine
    prompt = engine.input_processor.resolve_prompt(body.prompt_name, None) or ""
    return JSONResponse(await served.worker.run_in_tokenizer(
        lambda: [simple_tokens(engine.tokenizer, prompt + t, body.add_special_tokens) for t in texts]))


@router.post("/decode", response_model=list[str])
async def decode(body: TEIDecodeRequest, request: Request) -> Response:
    state = get_state(request)
    seqs = body.ids if body.ids and isinstance(body.ids[0], list) else [body.ids]
    check_batch(state, len(seqs), "`ids` cannot be empty")
    if any(not s for s in seqs):
        raise TEIError("empty", "`input_ids` cannot be empty")
    served = state.model(model_name(request, body.model))
    tok = served.engine.tokenizer
    bad = [t for s in seqs for t in s if not 0 <= t < len(tok)]
    if bad:
        raise TEIError("validation", f"Token ids outside the vocabulary [0, {len(tok)}): {bad[:5]}")
    return JSONResponse(await served.worker.run_in_tokenizer(
        lambda: [tok.decode(s, skip_special_tokens=body.skip_special_tokens) for s in seqs]))


@router.get("/info")
async def info(request: Request, model: Annotated[str | None, Query()] = None) -> dict[str, Any]:
    """TEI's model and router info, for the served ``model`` (?model= or X-Model; default: the first)."""
    from poolkit import __version__

    state = get_state(request)
    served = state.model(model_name(request, model))
    engine = served.engine
    return {"model_id": str(engine.model_config.name), "model_sha": None,
            "model_dtype": str(engine.dtype).removeprefix("torch."), "served_model_name": served.name,
            "model_type": model_type(engine), "max_concurrent_requests": state.limits.max_concurrent_requests,
            "max_input_length": engine.max_model_len, "max_batch_tokens": served.worker.max_batch_tokens,
            "max_batch_requests": None, "max_client_batch_size": state.limits.max_client_batch_size,
            "auto_truncate": engine.auto_truncate, "tokenization_workers": 1, "version": __version__,
            "sha": None, "docker_label": None}


@router.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)  # HEAD: load balancers probe with it
@router.api_route("/ping", methods=["GET", "HEAD"], include_in_schema=False)  # SageMaker's health route
async def health(request: Request) -> Response:
    """TEI's health on ``GET /``: 200 when serving, else TEI's ``unhealthy`` 503."""
    get_state(request).model(None)
    return Response(status_code=200)


@router.post("/", openapi_extra=body_schema(TEIEmbedRequest, TEISimilarityRequest, TEIEmbedSparseRequest,
                                            TEIPredictRequest, TEIRerankRequest))
@router.post("/invocations", include_in_schema=False)  # SageMaker's
async def default_task(data: Annotated[dict[str, Any], Body()], request: Request) -> Response:
    """The model's default task, by model type (see the module docstring)."""
    engine = get_state(request).model(model_name(request, data.get("model"))).engine
    kind = next(iter(model_type(engine)))
    if kind == "reranker":
        return await rerank(validate_body(TEIRerankRequest, data), request)
    if kind == "classifier":
        return await predict(validate_body(TEIPredictRequest, data), request)
    if isinstance(data.get("inputs"), dict):
        return await similarity(validate_body(TEISimilarityRequest, data), request)
    if is_sparse(engine):
        return await embed_sparse(validate_body(TEIEmbedSparseRequest, data), request)
    return await embed(validate_body(TEIEmbedRequest, data), request)


PATHS = frozenset(route.path for route in router.routes)  # TEI's own paths: the guard answers them in TEI's shape
