"""Errors as OpenAI-style bodies: ``{"object": "error", "message", "type", "param", "code"}``.

Bad input is always a 4xx that names the problem; only a bug is a 500.
"""

from __future__ import annotations

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from poolkit.registry.errors import PoolkitError

_TYPES = {400: "BadRequestError", 401: "AuthenticationError", 404: "NotFoundError", 405: "MethodNotAllowed",
          413: "RequestTooLargeError", 422: "BadRequestError", 429: "RateLimitError", 500: "InternalServerError",
          503: "ServiceUnavailableError"}


class APIError(Exception):
    """An error with its HTTP status; ``headers`` such as Retry-After go to the response."""

    def __init__(self, status: int, message: str, param: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.headers = status, message, param, headers


class Overloaded(APIError):
    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(429, message, headers={"Retry-After": str(retry_after)})


def error_body(status: int, message: str, param: str | None = None) -> dict:
    return {"object": "error", "message": message, "type": _TYPES.get(status, "APIError"), "param": param,
            "code": status}


def error_response(status: int, message: str, param: str | None = None, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, message, param), status_code=status, headers=headers)


def install(app) -> None:
    """Register handlers so that every error leaves the server in the OpenAI shape."""

    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError):
        return error_response(exc.status, exc.message, exc.param, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        if first.get("type") == "json_invalid":
            return error_response(400, f"Invalid JSON body: {first.get('ctx', {}).get('error', first.get('msg'))}")
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return error_response(400, f"Invalid request: {where}: {first.get('msg', 'invalid value')}" if where
                              else f"Invalid request: {first.get('msg', 'invalid body')}", where or None)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException):
        return error_response(exc.status_code, str(exc.detail))

    from poolkit.io_plugins.interface import IOProcessorError

    @app.exception_handler(IOProcessorError)
    async def _io_processor(_: Request, exc: IOProcessorError):  # the plugin's bug is a 500, bad input a 400
        return error_response(400 if exc.client_error else 500, str(exc))

    @app.exception_handler(PoolkitError)
    async def _poolkit(_: Request, exc: PoolkitError):
        return error_response(400, str(exc))

    @app.exception_handler(ValueError)
    async def _value(_: Request, exc: ValueError):
        return error_response(400, str(exc))

    @app.exception_handler(TypeError)
    async def _type(_: Request, exc: TypeError):
        return error_response(400, str(exc))

    @app.exception_handler(Exception)
    async def _internal(_: Request, exc: Exception):
        return error_response(500, f"Internal error: {type(exc).__name__}: {exc}")
