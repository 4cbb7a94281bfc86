"""Errors as OpenAI-style bodies: ``{"object": "error", "message", "type", "param", "code"}``.

Bad input is always a 4xx that names the problem; only a bug is a 500, and a 500 says nothing about
its cause but the request id (the traceback is in the log).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from poolkit.errors import InvalidRequestError, printable
from poolkit.server.protocol import TEXT_ERROR

logger = logging.getLogger("poolkit.server")

_TYPES = {400: "BadRequestError", 401: "AuthenticationError", 404: "NotFoundError", 405: "MethodNotAllowed",
          413: "RequestTooLargeError", 422: "BadRequestError", 429: "RateLimitError", 500: "InternalServerError",
          503: "ServiceUnavailableError"}


class APIError(Exception):
    """An error with its HTTP status; ``headers`` such as Retry-After go to the response."""

    def __init__(self, status: int, message: str, param: str | None = None, headers: dict[str, str] | None = None):
        message = printable(message)  # it may quote the client's text: a 4xx must still encode
        super().__init__(message)
        self.status, self.message, self.param, self.headers = status, message, param, headers


class Overloaded(APIError):
    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(429, message, headers={"Retry-After": str(retry_after)})


def error_body(status: int, message: str, param: str | None = None) -> dict:
    return {"object": "error", "message": printable(message), "type": _TYPES.get(status, "APIError"), "param": param,
            "code": status}


def error_response(status: int, message: str, param: str | None = None, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, message, param), status_code=status, headers=headers)


def request_id(request: Request) -> str:
    """The id the guard middleware gave this request (also its ``X-Request-Id`` response header)."""
    return request.scope.get("state", {}).get("request_id", "-")


def internal_error(rid: str) -> JSONResponse:
    """A bug on our side: a generic 500 naming the request id; the traceback goes to the log, not the client."""
    return error_response(500, f"Internal server error (request id {rid}); the server log has the details")


def validation_response(errors: list[dict]) -> JSONResponse:
    """A body the schema refuses, as a 400 naming the field. A text that cannot be encoded outranks the
    other members of a union it failed (``input``: a string, or a list of...), whose errors say less."""
    first = next((e for e in errors if e.get("type") == TEXT_ERROR), errors[0] if errors else {})
    if first.get("type") == "json_invalid":
        return error_response(400, f"Invalid JSON body: {first.get('ctx', {}).get('error', first.get('msg'))}")
    loc = [p for p in first.get("loc", ()) if p != "body" and not _union_label(p)]
    if first.get("type") == TEXT_ERROR:  # the message names the exact place (input[3], messages[0].content)
        return error_response(400, first["msg"], str(loc[0]) if loc else None)
    where = ".".join(str(p) for p in loc)
    problem = first.get("msg", "invalid value") + got(first)
    return error_response(400, f"Invalid request: {where}: {problem}" if where
                          else f"Invalid request: {problem}", where or None)


def got(error: dict) -> str:
    """`` (got VALUE)`` for a pydantic error about a value the client sent (nothing for a missing field)."""
    if error.get("type") == "missing" or "input" not in error or isinstance(error["input"], (dict, list)):
        return ""
    text = json.dumps(error["input"], ensure_ascii=True)
    return f" (got {text[:60] + '...' if len(text) > 60 else text})"


def _union_label(part: Any) -> bool:
    """pydantic's name for a union member in an error's location (``list[str]``, ``function-after[...]``)."""
    return isinstance(part, str) and ("[" in part or part in ("str", "int", "bool", "float"))


def install(app) -> None:
    """Register handlers so that every error leaves the server in the OpenAI shape.

    Only errors raised where input is validated (:class:`APIError`, :class:`InvalidRequestError`,
    FastAPI's body validation, an IO processor's invalid-input errors) are 4xx; anything else is a
    500 with a generic message, and its traceback is logged with the request id.
    """

    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError):
        return error_response(exc.status, exc.message, exc.param, exc.headers)

    @app.exception_handler(InvalidRequestError)
    async def _invalid(_: Request, exc: InvalidRequestError):
        return error_response(exc.status, exc.message, exc.param)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError):
        return validation_response(exc.errors())

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException):
        return error_response(exc.status_code, str(exc.detail))

    from poolkit.io_processor import IOProcessorError

    @app.exception_handler(IOProcessorError)
    async def _io_processor(request: Request, exc: IOProcessorError):  # bad input a 400, the plugin's bug a 500
        if exc.client_error:
            return error_response(400, str(exc))
        return _internal_error(request, exc)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception):
        return _internal_error(request, exc)


def _internal_error(request: Request, exc: BaseException) -> JSONResponse:
    rid = request_id(request)
    logger.error("request %s (%s %s) failed with a server error", rid, request.method, request.url.path,
                 exc_info=(type(exc), exc, exc.__traceback__))
    return internal_error(rid)
