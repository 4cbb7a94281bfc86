"""The guard middleware every HTTP request passes: request id, API key, body size, metrics, and the
failures no route handler sees (a client that goes away, a bug, a request cut short by shutdown).

Its own errors leave in the shape of the API the path belongs to: TEI's ``{"error", "error_type"}`` on
TEI's routes, OpenAI's elsewhere, and both sets of fields on ``/rerank`` and ``/tokenize``, which both
APIs share (there the body decides, and the guard answers before reading it)."""

from __future__ import annotations

import asyncio
import hmac
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

from fastapi.responses import JSONResponse

from poolkit.server import errors
from poolkit.server.routes import tei
from poolkit.server.state import ServerState

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")  # a client's X-Request-Id is kept only if it is this tame
# open without the API key, as vLLM and TEI keep them: health probes (TEI's GET / and SageMaker's /ping
# included), the version, and the API's own description (the docs page, its assets and the schema)
OPEN_PATHS = frozenset({"/health", "/ping", "/version", "/docs", "/openapi.json"})
OPEN_GETS = frozenset({"/"})  # GET / is TEI's health; POST / runs the model
SHARED_PATHS = frozenset({"/rerank", "/tokenize"})  # TEI's and another API's: the body decides


def is_open(scope: dict) -> bool:
    """Whether a request needs no API key (see :data:`OPEN_PATHS`)."""
    path = scope["path"]
    return path in OPEN_PATHS or path.startswith("/docs/assets/") or \
        (path in OPEN_GETS and scope.get("method") in ("GET", "HEAD"))


def respond(path: str, c: errors.Classified) -> JSONResponse:
    """A classified error answered by the guard, in the shape of the API that ``path`` belongs to, with its
    own status."""
    if path in tei.PATHS:
        return tei.error_response(c, own_status=True)
    body = errors.error_body(c.status, c.message, c.param)
    if path in SHARED_PATHS:
        body.update(tei.error_body(c))
    return JSONResponse(body, status_code=c.status, headers=c.headers)


def error_response(path: str, status: int, message: str, headers: dict | None = None) -> JSONResponse:
    """An error the guard answers itself (401, 413, 503), in the shape of ``path``'s API."""
    return respond(path, errors.of_status(status, message, headers))


class Guard:
    """Every HTTP request passes here, as plain ASGI (Starlette's ``BaseHTTPMiddleware`` costs a task and a
    stream per request): its request id, the API key and body-size checks, per-route metrics, and the
    failures no route handler sees: a client that goes away (its queued work is cancelled), a bug (a
    logged 500 in JSON), and a request cut short by shutdown (a JSON 503)."""

    def __init__(self, app: Any, state: ServerState) -> None:
        self.app, self.state = app, state

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        state, start, status = self.state, time.perf_counter(), [0]
        headers = dict(scope["headers"])
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        rid = given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid

        async def send_and_note(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", rid.encode())]
            await send(message)

        path = scope["path"]
        if state.api_key and not is_open(scope) and not _key_matches(headers, state.api_key):
            response = error_response(path, 401, "Missing or invalid API key: send 'Authorization: Bearer <key>'")
            return await self._observe(scope, response(scope, receive, send_and_note), status, start)
        size = headers.get(b"content-length", b"")
        if not size and b"chunked" in headers.get(b"transfer-encoding", b""):  # no length up front: count it
            size, receive = await _read_chunked(receive, state.limits.max_body_bytes)
        if size.isdigit() and int(size) > state.limits.max_body_bytes:
            response = error_response(path, 413, f"Request body of {int(size)} bytes is larger than "
                                                 f"max_body_bytes={state.limits.max_body_bytes}")
            return await self._observe(scope, response(scope, receive, send_and_note), status, start)
        await self._observe(scope, self._run(scope, receive, send_and_note, status), status, start)

    async def _run(self, scope: dict, receive: Callable, send: Callable, status: list[int]) -> None:
        """The app, cancelled when the client disconnects once its body is read (its queued prompts are then
        dropped); a bug becomes a logged JSON 500, a request cut short by shutdown a JSON 503."""
        gone: list[bool] = [False]  # set by the watcher when it cancels the app because the client left
        app = asyncio.ensure_future(self.app(scope, _watching(receive, lambda: status[0], lambda: app, gone), send))
        try:
            await app
        except asyncio.CancelledError:
            if gone[0]:  # the client went away
                status[0] = status[0] or 499  # nginx's "client closed request": nothing is sent
                return
            if not status[0]:  # uvicorn's graceful-shutdown timeout cancelled us: answer, never a plain 500
                status[0] = 503
                await _try_send(error_response(scope["path"], 503, "The server is shutting down"), scope, send)
            # not re-raised: uvicorn would log the CancelledError of a request it has already been answered for
        except Exception as exc:
            classified = errors.classify(exc, scope)  # a bug: logged there, once
            if not status[0]:
                await _try_send(respond(scope["path"], classified), scope, send)
        finally:
            app.cancel()

    async def _observe(self, scope: dict, call: Any, status: list[int], start: float) -> None:
        try:
            await call
        finally:
            route = getattr(scope.get("route"), "path", "other")  # label by route template, never by raw path
            self.state.metrics.requests.labels(route, str(status[0] or 500)).inc()
            self.state.metrics.latency.labels(route).observe(time.perf_counter() - start)


def _key_matches(headers: dict[bytes, bytes], key: str) -> bool:
    """``Authorization: Bearer <key>``, compared in constant time."""
    given = headers.get(b"authorization", b"")
    return hmac.compare_digest(given, b"Bearer " + key.encode())


def _watching(receive: Callable, response_status: Callable[[], int], app: Callable[[], asyncio.Future],
              gone: list[bool]) -> Callable:
    """``receive`` for the app; once the app has read the whole body, a watcher waits for the client to
    disconnect and then cancels the app (unless its response has begun)."""

    async def watch() -> None:
        message = await receive()
        if message["type"] == "http.disconnect" and not response_status() and not app().done():
            gone[0] = True
            app().cancel()

    async def wrapped() -> dict:
        message = await receive()
        if message["type"] == "http.request" and not message.get("more_body", False):
            watcher = asyncio.ensure_future(watch())
            app().add_done_callback(lambda _: watcher.cancel())
        return message

    return wrapped


async def _try_send(response: Any, scope: dict, send: Callable) -> None:
    try:
        await response(scope, _no_body, send)
    except Exception:  # the connection is gone already
        pass


async def _no_body() -> dict:
    return {"type": "http.disconnect"}


async def _read_chunked(receive: Callable, limit: int) -> tuple[bytes, Callable]:
    """Read a chunked body up to ``limit`` + 1 bytes: (its size so far, as digits; a ``receive`` that replays it)."""
    body, more = b"", True
    while more and len(body) <= limit:
        message = await receive()
        if message["type"] != "http.request":  # the client went away: let the app see that
            break
        body += message.get("body", b"")
        more = message.get("more_body", False)
    replayed = False

    async def replay() -> dict:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return str(len(body)).encode(), replay
