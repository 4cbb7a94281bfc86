"""``create_app``: the FastAPI application, its middleware and its lifecycle."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI, Request

from poolkit.server import errors
from poolkit.server.routes import ROUTERS
from poolkit.server.state import Limits, ServedModel, ServerState
from poolkit.server.worker import ModelWorker


def create_app(load_engines: Callable[[], dict[str, Any]], *, limits: Limits | None = None,
               api_key: str | None = None, background_load: bool = True) -> FastAPI:
    """An app serving the engines ``load_engines()`` returns (served name -> Engine).

    With ``background_load`` the server answers at once: /health is 503 until the models are
    loaded, then 200. Shutdown stops admitting work, finishes what is queued, then exits.
    """
    state = ServerState(limits=limits or Limits(), api_key=api_key)

    def load() -> None:
        try:
            for name, engine in load_engines().items():
                worker = ModelWorker(engine, state.limits.max_batch_tokens, state.limits.max_concurrent_requests,
                                     state.limits.max_queue_tokens, state.metrics)
                state.models[name] = ServedModel(name, engine, worker)
            state.ready = True
        except Exception as exc:  # reported by /health and every route as a 503
            state.load_error = f"{type(exc).__name__}: {exc}"

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        if background_load:
            threading.Thread(target=load, name="poolkit-load", daemon=True).start()
        else:
            load()
        yield
        state.shutting_down = True
        for served in state.models.values():
            served.worker.close()

    app = FastAPI(title="poolkit", summary="OpenAI-compatible server for pooling models", lifespan=lifespan)
    app.state.poolkit = state
    errors.install(app)

    @app.middleware("http")
    async def guard(request: Request, call_next):
        route, start = request.url.path, time.perf_counter()
        if state.api_key and route != "/health":
            if request.headers.get("authorization") != f"Bearer {state.api_key}":
                response = errors.error_response(401, "Missing or invalid API key: send 'Authorization: Bearer <key>'")
                state.metrics.requests.labels(route, "401").inc()
                return response
        size = request.headers.get("content-length")
        if size and size.isdigit() and int(size) > state.limits.max_body_bytes:
            response = errors.error_response(413, f"Request body of {size} bytes is larger than max_body_bytes="
                                                  f"{state.limits.max_body_bytes}")
        else:
            response = await call_next(request)
        matched = request.scope.get("route")  # label by route template, never by raw path
        known = getattr(matched, "path", "other")
        state.metrics.requests.labels(known, str(response.status_code)).inc()
        state.metrics.latency.labels(known).observe(time.perf_counter() - start)
        return response

    for router in ROUTERS:
        app.include_router(router)
    return app


class GracefulServer(uvicorn.Server):
    """SIGTERM/SIGINT: stop accepting, finish in-flight requests, exit 0 (plain uvicorn re-raises the signal)."""

    @contextlib.contextmanager
    def capture_signals(self):
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
