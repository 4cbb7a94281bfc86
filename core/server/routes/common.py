"""Helpers shared by the routes: the server state, input counting, vector encoding, running a request's prompts."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import torch
from fastapi import Request, Response

from poolkit.inputs import normalize_prompts
from poolkit.request import Prepared
from poolkit.server.errors import APIError
from poolkit.server.protocol import Usage, check_texts
from poolkit.server.bulk import request_bytes_var
from poolkit.server.state import ServedModel, ServerState


def get_state(request: Request) -> ServerState:
    """The server's state; also notes this request's body size, which picks the model's tokenizer thread for
    it (a big body is tokenized on the bulk thread: :data:`poolkit.server.bulk.BIG_REQUEST_BYTES`)."""
    size = request.headers.get("content-length", "")
    request_bytes_var.set(int(size) if size.isdigit() else 0)
    return request.app.state.poolkit


def json_response(body: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    """``body`` as JSON through orjson: numpy arrays written directly (each float32 as its shortest repr,
    which parses back to the same float32), several times faster than the stdlib ``json`` on vectors."""
    return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), status_code=status_code,
                    headers=headers, media_type="application/json")


def encode_vector(tensor: Any, encoding_format: str, embed_dtype: str = "float32",
                  endianness: str = "native") -> Any:
    """A float32 numpy array (for :func:`json_response`), or base64 of the vector's bytes: float32
    little-endian by default (what the OpenAI SDK decodes); vLLM's ``embed_dtype`` (float16, bfloat16:
    the top 16 bits of float32) and ``endianness``."""
    if encoding_format != "base64":
        return tensor.float().numpy()
    order = {"native": "=", "little": "<", "big": ">"}[endianness]
    if embed_dtype == "bfloat16":
        raw = tensor.to(torch.bfloat16).view(torch.int16).numpy().astype(order + "i2")
    else:
        raw = tensor.numpy().astype(order + ("f2" if embed_dtype == "float16" else "f4"))
    return base64.b64encode(raw.tobytes()).decode("ascii")


async def run_prompts(state: ServerState, served: ServedModel, prompts: Any, task: str | None, params: Any,
                      priority: int = 0, direct: bool = True, **kwargs: Any) -> tuple[Prepared, list[Any]]:
    """One request's prompts counted against the batch limit, validated and tokenized (``Engine.prepare``, on the
    tokenizer thread), run (engine loop) and finished: the :class:`Prepared` and one output per prompt.
    ``direct=False`` keeps the preparing off the engine loop's thread (images: decoding, fetching an allowed URL)."""
    items = normalize_prompts(prompts)
    state.check_batch_size(len(items))
    prepared, pooled = await served.worker.run(served.engine.prepare, items, task, params, direct=direct,
                                               priority=priority, **kwargs)
    return prepared, prepared.finish(pooled)


def usage(prepared: Prepared) -> Usage:
    return Usage(prompt_tokens=prepared.num_tokens, total_tokens=prepared.num_tokens)


def require_text_list(value: Any, field: str) -> list[str]:
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise APIError(400, f"{field} must be a string or a list of strings", field)
    return values



def texts_checked(handler: Any) -> Any:
    """``handler(body, request)`` after the texts of ``body`` (a schema without :class:`Checked`: TEI's, on the
    routes it shares with another API) are checked as every other body's are: a 4xx naming the field."""

    async def checked(body: Any, request: Request) -> Any:
        check_texts(body)
        return await handler(body, request)

    return checked
