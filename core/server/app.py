"""``create_app``: the FastAPI application, its middleware and its lifecycle."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI

from poolkit.server import errors
from poolkit.server.routes import ROUTERS
from poolkit.server.state import Limits, ServedModel, ServerState
from poolkit.server.worker import EngineLoop, ModelWorker


def create_app(load_engines: Callable[[], dict[str, Any]], *, limits: Limits | None = None,
               api_key: str | None = None, background_load: bool = True,
               engine_loop: EngineLoop | None = None) -> FastAPI:
    """An app serving the engines ``load_engines()`` returns (served name -> Engine).

    With ``background_load`` the server answers at once: /health is 503 until the models are
    loaded, then 200. Shutdown stops admitting work, finishes what is queued, then exits.
    Forward passes run on ``engine_loop`` when given (its caller runs it: ``poolkit serve`` on the
    main thread), else on an engine-loop thread the app starts and stops with its lifespan.
    """
    state = ServerState(limits=limits or Limits(), api_key=api_key)
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

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        if own_loop:
            engine_loop.start()
        if background_load:
            threading.Thread(target=load, name="poolkit-load", daemon=True).start()
        else:
            load()
        yield
        state.shutting_down = True
        for served in state.models.values():
            served.worker.close()
        if own_loop:
            engine_loop.stop()

    app = FastAPI(title="poolkit", summary="OpenAI-compatible server for pooling models", lifespan=lifespan)
    app.state.poolkit = state
    errors.install(app)

    app.add_middleware(Guard, state=state)
    for router in ROUTERS:
        app.include_router(router)
    return app


class Guard:
    """API key and body-size checks, and per-route metrics, as plain ASGI (Starlette's
    ``BaseHTTPMiddleware`` costs a task and a stream per request)."""

    def __init__(self, app: Any, state: ServerState) -> None:
        self.app, self.state = app, state

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        state, start, status = self.state, time.perf_counter(), [500]
        headers = dict(scope["headers"])
        if state.api_key and scope["path"] != "/health" and \
                headers.get(b"authorization", b"").decode("latin-1") != f"Bearer {state.api_key}":
            response = errors.error_response(401, "Missing or invalid API key: send 'Authorization: Bearer <key>'")
            state.metrics.requests.labels("other", "401").inc()
            return await response(scope, receive, send)
        size = headers.get(b"content-length", b"")
        if not size and b"chunked" in headers.get(b"transfer-encoding", b""):  # no length up front: count it
            size, receive = await _read_chunked(receive, state.limits.max_body_bytes)
        if size.isdigit() and int(size) > state.limits.max_body_bytes:
            response = errors.error_response(413, f"Request body of {int(size)} bytes is larger than "
                                                  f"max_body_bytes={state.limits.max_body_bytes}")
            return await self._observe(scope, response(scope, receive, send), status, start, 413)

        async def send_and_note(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        await self._observe(scope, self.app(scope, receive, send_and_note), status, start)

    async def _observe(self, scope: dict, call: Any, status: list[int], start: float, fixed: int | None = None) -> None:
        try:
            await call
        finally:
            route = getattr(scope.get("route"), "path", "other")  # label by route template, never by raw path
            self.state.metrics.requests.labels(route, str(fixed or status[0])).inc()
            self.state.metrics.latency.labels(route).observe(time.perf_counter() - start)


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

    :returns: the exit status: 0 after a clean shutdown, 1 if the server never started (e.g. port in use).
    """
    server = uvicorn.Server(config)  # on a thread: it leaves signals alone; they are routed to it here
    http = threading.Thread(target=server.run, name="poolkit-http")
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, server.handle_exit)
    http.start()
    engine_loop.run(until=lambda: not http.is_alive())
    http.join()
    return 0 if server.started else 1
