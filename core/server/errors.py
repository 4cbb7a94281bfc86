"""One classification of every error a request meets, rendered by each API in its own shape.

:func:`classify` maps an exception (and :func:`of_status` a status a layer answers itself: the guard
middleware, routing) to a :class:`Classified`: status, kind, message, param, and whether it is our bug.
Bad input is always a 4xx that names the problem; only a bug is a 500, and a 500 says nothing about its
cause but the request id: :func:`classify` logs its traceback, once. The OpenAI shape is rendered here
(``{"object": "error", "message", "type", "param", "code"}``), TEI's in routes/tei.py, Cohere's in
routes/cohere.py; the guard middleware picks one by path.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from poolkit.errors import InvalidRequestError, UnsupportedTaskError, printable
from poolkit.server.protocol import TEXT_ERROR

logger = logging.getLogger("poolkit.server")

_TYPES = {400: "BadRequestError", 401: "AuthenticationError", 404: "NotFoundError", 405: "MethodNotAllowed",
          413: "RequestTooLargeError", 422: "BadRequestError", 429: "RateLimitError", 500: "InternalServerError",
          503: "ServiceUnavailableError"}


class APIError(Exception):
    """An error with its HTTP status; ``headers`` such as Retry-After go to the response. ``kind`` (one of
    :data:`KINDS`) is the status's unless given: ``"empty"`` for a request with nothing to run."""

    def __init__(self, status: int, message: str, param: str | None = None, headers: dict[str, str] | None = None,
                 kind: str | None = None):
        message = printable(message)  # it may quote the client's text: a 4xx must still encode
        super().__init__(message)
        self.status, self.message, self.param, self.headers = status, message, param, headers
        self.kind = kind or kind_of(status)


class Overloaded(APIError):
    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(429, message, headers={"Retry-After": str(retry_after)})


# What went wrong, whatever the API: each API maps a kind to its own words (TEI's ``error_type``).
KINDS = ("invalid", "empty", "unsupported", "overloaded", "unavailable", "internal")


def kind_of(status: int) -> str:
    """The kind of an HTTP status that carries no other: 429 overloaded, 503 unavailable, 5xx internal."""
    return {429: "overloaded", 503: "unavailable"}.get(status) or ("internal" if status >= 500 else "invalid")


@dataclass(frozen=True)
class Classified:
    """One error, classified once for every API: ``status`` is the HTTP status (OpenAI's and Cohere's;
    TEI keeps its own per kind), ``bug`` an error of ours (already logged with its traceback: the message
    names only the request id), ``body_errors`` pydantic's errors of a body the schema refused (each API
    words those itself)."""

    status: int
    kind: str
    message: str
    param: str | None = None
    headers: dict[str, str] | None = None
    bug: bool = False
    body_errors: list[dict] | None = None


def of_status(status: int, message: str, headers: dict[str, str] | None = None) -> Classified:
    """A status a layer answers itself (the guard: 401, 413; routing: 404, 405)."""
    return Classified(status, kind_of(status), printable(message), headers=headers)


def classify(exc: BaseException, request: Any) -> Classified:
    """``exc`` raised while serving ``request`` (a Starlette request or an ASGI scope), as every API sees it.

    Only errors raised where input is validated (:class:`APIError`, :class:`InvalidRequestError`, FastAPI's
    body validation, an HTTP error of routing) are 4xx; anything else is a bug: a 500 naming the request
    id, its traceback logged here, once, with the request id.
    """
    if isinstance(exc, APIError):
        return Classified(exc.status, exc.kind, exc.message, exc.param, exc.headers)
    if isinstance(exc, UnsupportedTaskError):
        return Classified(exc.status, "unsupported", exc.message, exc.param)
    if isinstance(exc, InvalidRequestError):
        return Classified(exc.status, "invalid", exc.message, exc.param)
    if isinstance(exc, RequestValidationError):
        errors = exc.errors()
        return Classified(400, "invalid", *_validation_message(errors), body_errors=errors)
    if isinstance(exc, StarletteHTTPException):
        return of_status(exc.status_code, str(exc.detail), exc.headers)
    scope = request.scope if hasattr(request, "scope") else request
    rid = scope.get("state", {}).get("request_id", "-")
    logger.error("request %s (%s %s) failed with a server error", rid, scope.get("method"), scope.get("path"),
                 exc_info=(type(exc), exc, exc.__traceback__))
    return Classified(500, "internal", f"Internal server error (request id {rid}); the server log has the details",
                      bug=True)


def error_body(status: int, message: str, param: str | None = None) -> dict:
    return {"object": "error", "message": printable(message), "type": _TYPES.get(status, "APIError"), "param": param,
            "code": status}


def error_response(status: int, message: str, param: str | None = None, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, message, param), status_code=status, headers=headers)


def openai_response(c: Classified) -> JSONResponse:
    """A classified error in the OpenAI shape."""
    return error_response(c.status, c.message, c.param, c.headers)


def _validation_message(errors: list[dict]) -> tuple[str, str | None]:
    """A body the schema refuses: the message naming the field, and the field. A text that cannot be encoded
    outranks the other members of a union it failed (``input``: a string, or a list of...), whose errors say less."""
    first = next((e for e in errors if e.get("type") == TEXT_ERROR), errors[0] if errors else {})
    if first.get("type") == "json_invalid":
        return f"Invalid JSON body: {first.get('ctx', {}).get('error', first.get('msg'))}", None
    loc = [p for p in first.get("loc", ()) if p != "body" and not union_label(p)]
    if first.get("type") == TEXT_ERROR:  # the message names the exact place (input[3], messages[0].content)
        return first["msg"], str(loc[0]) if loc else None
    where = ".".join(str(p) for p in loc)
    problem = first.get("msg", "invalid value") + got(first)
    return (f"Invalid request: {where}: {problem}" if where else f"Invalid request: {problem}"), where or None


def got(error: dict) -> str:
    """`` (got VALUE)`` for a pydantic error about a value the client sent (nothing for a missing field)."""
    if error.get("type") == "missing" or "input" not in error or isinstance(error["input"], (dict, list)):
        return ""
    text = json.dumps(error["input"], ensure_ascii=True)
    return f" (got {text[:60] + '...' if len(text) > 60 else text})"


def union_label(part: Any) -> bool:
    """pydantic's name for a union member in an error's location (``list[str]``, ``function-after[...]``)."""
    return isinstance(part, str) and ("[" in part or part in ("str", "int", "bool", "float"))


def install(app) -> None:
    """Every error a route raises leaves the server in the OpenAI shape (routers of another API render
    the same classification in theirs: :func:`shaped_route`). A bug gets past these handlers to the guard
    middleware, which classifies it the same way (and renders it in the shape of the path's API)."""

    async def _classified(request: Request, exc: Exception):
        return openai_response(classify(exc, request))

    for cls in (APIError, InvalidRequestError, RequestValidationError, StarletteHTTPException):
        app.add_exception_handler(cls, _classified)


def shaped_route(render: Any) -> type[APIRoute]:
    """A route class whose errors, body validation included, leave as ``render(classified, request)``."""

    class ShapedRoute(APIRoute):
        def get_route_handler(self):
            handler = super().get_route_handler()

            async def route(request: Request) -> Response:
                try:
                    return await handler(request)
                except Exception as exc:
                    return render(classify(exc, request), request)

            return route

    return ShapedRoute
