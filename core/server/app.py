"""``create_app``: the FastAPI application, its middleware and its lifecycle; ``serve`` runs it."""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import signal
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI

from poolkit.server import errors
from poolkit.server.routes import ROUTERS
from poolkit.server.state import Limits, ServedModel, ServerState
from poolkit.server.worker import EngineLoop, ModelWorker, request_id_var

logger = logging.getLogger("poolkit.server")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")  # a client's X-Request-Id is kept only if it is this tame


def create_app(load_engines: Callable[[], dict[str, Any]], *, limits: Limits | None = None,
               api_key: str | None = None, background_load: bool = True,
               engine_loop: EngineLoop | None = None, shutdown_timeout: float = 30) -> FastAPI:
    """An app serving the engines ``load_engines()`` returns (served name -> Engine).

    With ``background_load`` the server answers at once: /health is 503 until the models are
    loaded, then 200 (``poolkit serve`` loads them before it binds unless ``--background-load``).
    Shutdown stops admitting work (JSON 503), lets what is in flight finish for up to
    ``shutdown_timeout`` seconds, then answers what is left with a JSON 503. Forward passes run on
    ``engine_loop`` when given (its caller runs it: ``poolkit serve`` on the main thread), else on an
    engine-loop thread the app starts and stops with its lifespan.
    """
    state = ServerState(limits=limits or Limits(), api_key=api_key, shutdown_timeout=shutdown_timeout)
    own_loop = engine_loop is None
    engine_loop = engine_loop or EngineLoop()

    def load() -> None:
        try:
            for name, engine in load_engines().items():
                engine.model_config.served_name = name  # messages name the model as clients know it
                worker = ModelWorker(engine, engine_loop, state.limits.max_batch_tokens, state.limits.max_concurrent_requests,
                                     state.limits.max_queue_tokens, state.metrics.for_model(name))
                state.models[name] = ServedModel(name, engine, worker)
            state.ready = True
        except Exception as exc:  # reported by /health and every route as a 503
            state.load_error = f"{type(exc).__name__}: {exc}"
            logger.error("loading the models failed", exc_info=True)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        if own_loop:
            engine_loop.start()
        if background_load:
            threading.Thread(target=load, name="poolkit-load", daemon=True).start()
        else:
            load()
        yield
        state.drain()
        if own_loop:
            engine_loop.stop()
        logger.info("shut down")

    app = FastAPI(title="poolkit", summary="OpenAI-compatible server for pooling models", lifespan=lifespan,
                  docs_url=None, redoc_url=None)  # /docs is served from the swagger-ui-bundle package below
    app.state.poolkit = state
    errors.install(app)

    app.add_middleware(Guard, state=state)
    for router in ROUTERS:
        app.include_router(router)
    return app


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
        request_id_var.set(rid)

        async def send_and_note(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", rid.encode())]
            await send(message)

        if state.api_key and scope["path"] != "/health" and not _key_matches(headers, state.api_key):
            response = errors.error_response(401, "Missing or invalid API key: send 'Authorization: Bearer <key>'")
            return await self._observe(scope, response(scope, receive, send_and_note), status, start)
        size = headers.get(b"content-length", b"")
        if not size and b"chunked" in headers.get(b"transfer-encoding", b""):  # no length up front: count it
            size, receive = await _read_chunked(receive, state.limits.max_body_bytes)
        if size.isdigit() and int(size) > state.limits.max_body_bytes:
            response = errors.error_response(413, f"Request body of {int(size)} bytes is larger than "
                                                  f"max_body_bytes={state.limits.max_body_bytes}")
            return await self._observe(scope, response(scope, receive, send_and_note), status, start)
        await self._observe(scope, self._run(scope, receive, send_and_note, status, rid), status, start)

    async def _run(self, scope: dict, receive: Callable, send: Callable, status: list[int], rid: str) -> None:
        """The app, cancelled when the client disconnects once its body is read (its queued prompts are then
        dropped); a bug becomes a logged JSON 500, a request cut short by shutdown a JSON 503."""
        app = asyncio.ensure_future(self.app(scope, _watching(receive, lambda: status[0], lambda: app), send))
        try:
            await app
        except asyncio.CancelledError:
            if app.cancelled() and not asyncio.current_task().cancelling():  # the client went away
                status[0] = status[0] or 499  # nginx's "client closed request": nothing is sent
                return
            if not status[0]:  # uvicorn's graceful-shutdown timeout cancelled us: answer, never a plain 500
                status[0] = 503
                await _try_send(errors.error_response(503, "The server is shutting down"), scope, send)
        except Exception as exc:
            logger.error("request %s (%s %s) failed with a server error", rid, scope.get("method"), scope["path"],
                         exc_info=exc)
            if not status[0]:
                await _try_send(errors.internal_error(rid), scope, send)
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


def _watching(receive: Callable, response_status: Callable[[], int], app: Callable[[], asyncio.Future]) -> Callable:
    """``receive`` for the app; once the app has read the whole body, a watcher waits for the client to
    disconnect and then cancels the app (unless its response has begun)."""

    async def watch() -> None:
        message = await receive()
        if message["type"] == "http.disconnect" and not response_status() and not app().done():
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


def serve(app: FastAPI, engine_loop: EngineLoop, config: uvicorn.Config) -> int:
    """Run HTTP on a thread and ``engine_loop`` on this (the main) thread until SIGTERM/SIGINT drains both.

    On the signal the app stops admitting requests (JSON 503) and gives those in flight up to its
    ``shutdown_timeout``; uvicorn's own graceful timeout is set a little longer, as a backstop.

    :returns: the exit status: 0 after a clean shutdown, 1 if the server never started (e.g. port in use).
    """
    state: ServerState = app.state.poolkit
    config.timeout_graceful_shutdown = state.shutdown_timeout + 5
    server = uvicorn.Server(config)  # on a thread: it leaves signals alone; they are routed to it here
    http = threading.Thread(target=server.run, name="poolkit-http")

    def on_signal(sig: int, frame: Any) -> None:
        if not state.shutting_down:
            logger.info("received %s: finishing requests in flight (up to %g s), then exiting",
                        signal.Signals(sig).name, state.shutdown_timeout)
            threading.Thread(target=state.drain, name="poolkit-drain", daemon=True).start()
        server.handle_exit(sig, frame)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    http.start()
    engine_loop.run(until=lambda: not http.is_alive())
    http.join()
    return 0 if server.started else 1
