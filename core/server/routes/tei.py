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

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError

from poolkit.params import PoolingParams
from poolkit.request import Prepared
from poolkit.scoring import cosine, prepare_pairs, rerank_order
from poolkit.server.errors import APIError, Classified, classify, of_status, shaped_route, union_label
from poolkit.server.protocol_tei import (Prediction, SimilarityParameters, SparseValue, TEIDecodeRequest,
                                         TEIEmbedAllRequest, TEIEmbedRequest, TEIEmbedSparseRequest,
                                         TEIPredictRequest, TEIRerankRequest, TEISimilarityRequest,
                                         TEITokenizeRequest)
from poolkit.server.tei_tokens import send_json, tokens_json
from poolkit.server.routes.common import get_state, json_response, run_prompts
from poolkit.server.routes.score import run_score

# --- errors -----------------------------------------------------------------------------------------

STATUS = {"validation": 422, "tokenizer": 422, "empty": 400, "backend": 424, "overloaded": 429, "unhealthy": 503}
EMPTY = "`inputs` cannot be empty"
MODEL_HEADER = "x-model"  # a TEI request's model when neither its body nor ?model= names one


# TEI's error_type of each kind of error (poolkit.server.errors.KINDS)
ERROR_TYPES = {"invalid": "validation", "empty": "empty", "unsupported": "backend", "overloaded": "overloaded",
               "unavailable": "unhealthy", "internal": "backend"}
KINDS = {"validation": "invalid", "tokenizer": "invalid", "empty": "empty", "backend": "unsupported",
         "overloaded": "overloaded", "unhealthy": "unavailable"}


def error_body(c: Classified) -> dict[str, str]:
    message = _validation_message(c.body_errors) if c.body_errors is not None else c.message
    return {"error": message, "error_type": ERROR_TYPES[c.kind]}


def error_response(c: Classified, request: Any = None, own_status: bool = False) -> JSONResponse:
    """A classified error in TEI's shape: TEI's status of its type, a bug's 500, or (``own_status``: the
    guard middleware's, routing's) the status as classified."""
    status = c.status if own_status or c.bug else STATUS[ERROR_TYPES[c.kind]]
    return JSONResponse(error_body(c), status_code=status, headers=c.headers)


def model_name(request: Request, given: Any = None) -> str | None:
    """The served model a TEI request names: its body's ``model``, else ``?model=``, else the X-Model header;
    None (the first served model) if none does."""
    if isinstance(given, str):
        return given
    return request.query_params.get("model") or request.headers.get(MODEL_HEADER) or None


class TEIError(APIError):
    """An error of one of TEI's types (a key of :data:`STATUS`)."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(STATUS[error_type], message, kind=KINDS[error_type])


def _validation_message(errors: list[dict]) -> str:
    """axum's wording for a body serde refuses, naming the field (union-member labels left out)."""
    first = errors[0] if errors else {}
    if first.get("type") == "json_invalid":
        return f"Failed to parse the request body as JSON: {first.get('ctx', {}).get('error', first.get('msg'))}"
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body" and not union_label(p))
    return f"Failed to deserialize the JSON body into the target type: {where + ': ' if where else ''}" \
           f"{first.get('msg', 'invalid body')}"


def tei_error(exc: Exception, request: Request) -> JSONResponse:
    """``exc`` as TEI answers it (:func:`poolkit.server.errors.classify`): a model that does not serve the task
    is TEI's ``backend`` (424), bad input ``validation`` (422), a bug a logged 500 naming only the request id."""
    return error_response(classify(exc, request))


class TEIRoute(shaped_route(error_response)):
    """A route whose errors, body validation and a wrong method included, leave in TEI's shape."""

    async def handle(self, scope: dict, receive: Any, send: Any) -> None:
        if self.methods and scope["method"] not in self.methods:
            allowed = ", ".join(sorted(self.methods))
            message = f"Method {scope['method']} is not allowed on {scope['path']}; use {allowed}"
            response = error_response(of_status(405, message, {"Allow": allowed}), own_status=True)
            return await response(scope, receive, send)
        return await super().handle(scope, receive, send)


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


def prompts(state: Any, inputs: Any) -> list[Any]:
    """TEI's ``inputs``: a text, a list of token ids, or a batch of them; none of them empty."""
    one = isinstance(inputs, str) or (bool(inputs) and all(isinstance(t, int) for t in inputs))
    items = [inputs] if one else list(inputs)
    state.check_batch_size(len(items), empty=EMPTY)
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
    """The classify task's inputs, prepared as the Engine prepares them: texts by ``Engine.prepare``, pairs by
    :func:`poolkit.scoring.prepare_pairs` (tokenized together, as a cross-encoder's); each checks ``params``."""
    adapter = engine.task("classify")  # a model without a classifier head: UnsupportedTaskError, TEI's 424
    tokens: list[Any] = [None] * len(seqs)
    for size in (1, 2):
        idx = [i for i, s in enumerate(seqs) if len(s) == size]
        if not idx:
            continue
        if size == 1:
            prepared = engine.prepare([seqs[i][0] for i in idx], "classify", params)
        else:
            prepared = prepare_pairs(engine, [seqs[i][0] for i in idx], [seqs[i][1] for i in idx], "classify", params)
        for i, t in zip(idx, prepared.tokens):
            tokens[i] = t
    return Prepared(adapter, tokens, [params] * len(seqs))


MAX_CHAR_MULTIPLIER = 250  # TEI's: a text to /tokenize has at most max_input_length * 250 characters
def check_tokenize_length(texts: list[str], max_input_length: int) -> None:
    """TEI's bound on ``/tokenize`` (core/src/tokenization.rs): a text over ``max_input_length * 250``
    characters is refused before it is tokenized, as TEI refuses it (its 422, TEI's wording)."""
    limit = max_input_length * MAX_CHAR_MULTIPLIER
    for text in texts:
        if len(text) > limit:
            raise TEIError("validation", f"`inputs` must have less than {limit} characters. Given: {len(text)}; "
                           f"split the text (the limit is {MAX_CHAR_MULTIPLIER} characters per token of the "
                           f"model's max_input_length, {max_input_length})")


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
    state.check_batch_size(len(seqs), empty=EMPTY)
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
    state.check_batch_size(len(body.texts), empty="`texts` cannot be empty")
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
    return JSONResponse([float(cosine(pooled[0], v)) for v in pooled[1:]])


async def tokenize(body: TEITokenizeRequest, request: Request) -> Response:
    """TEI's ``/tokenize`` (an ``inputs`` body; routes/tokenize.py sends it here), the prompt prepended."""
    state = get_state(request)
    texts = [body.inputs] if isinstance(body.inputs, str) else body.inputs
    state.check_batch_size(len(texts), empty=EMPTY)
    if any(not t for t in texts):
        raise TEIError("empty", EMPTY)
    served = state.model(model_name(request, body.model))
    engine = served.engine
    check_tokenize_length(texts, engine.max_model_len)
    prompt = engine.input_processor.resolve_prompt(body.prompt_name, None) or ""
    # tokenized and rendered on the tokenizer thread (a big body: the bulk thread): the event loop only sends bytes
    return send_json(await served.worker.run_in_tokenizer(
        lambda: tokens_json(engine.tokenizer, [prompt + t for t in texts], body.add_special_tokens)))


@router.post("/decode", response_model=list[str])
async def decode(body: TEIDecodeRequest, request: Request) -> Response:
    state = get_state(request)
    seqs = body.ids if body.ids and isinstance(body.ids[0], list) else [body.ids]
    state.check_batch_size(len(seqs), empty="`ids` cannot be empty")
    if any(not s for s in seqs):
        raise TEIError("empty", "`input_ids` cannot be empty")
    served = state.model(model_name(request, body.model))

    def decode_all() -> list[str]:
        tok = served.engine.tokenizer  # the running thread's own (a big body runs on the bulk thread)
        bad = [t for s in seqs for t in s if not 0 <= t < len(tok)]
        if bad:
            raise TEIError("validation", f"Token ids outside the vocabulary [0, {len(tok)}): {bad[:5]}")
        return [tok.decode(s, skip_special_tokens=body.skip_special_tokens) for s in seqs]

    return JSONResponse(await served.worker.run_in_tokenizer(decode_all))


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
