"""``create_app``: the FastAPI application of ``poolkit serve``: its models, routes, middleware and lifecycle."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI

from poolkit.server import errors
from poolkit.server.engine_loop import EngineLoop
from poolkit.server.middleware import Guard
from poolkit.server.queue import ModelWorker
from poolkit.server.routes import ROUTERS
from poolkit.server.state import Limits, ServedModel, ServerState

logger = logging.getLogger("poolkit.server")


@dataclass
class CORS:
    """Cross-origin access for browsers (vLLM's --allowed-origins, --allowed-methods, --allowed-headers,
    --allow-credentials): Starlette's CORSMiddleware, outside the API key check, so that a browser's
    preflight (an OPTIONS request, which carries no key) is answered."""

    allowed_origins: list[str] = field(default_factory=list)
    allowed_methods: list[str] = field(default_factory=lambda: ["*"])
    allowed_headers: list[str] = field(default_factory=lambda: ["*"])
    allow_credentials: bool = False


def create_app(load_engines: Callable[[], dict[str, Any]], *, limits: Limits | None = None,
               api_key: str | None = None, background_load: bool = True,
               engine_loop: EngineLoop | None = None, shutdown_timeout: float = 30, cors: CORS | None = None) -> FastAPI:
    """An app serving the engines ``load_engines()`` returns (served name -> Engine).

    With ``background_load`` the server answers at once: /health is 503 until the models are
    loaded, then 200 (``poolkit serve`` loads them before it binds unless ``--background-load``).
    Shutdown stops admitting work (JSON 503), lets what is in flight finish for up to
    ``shutdown_timeout`` seconds, then answers what is left with a JSON 503. Forward passes run on
    ``engine_loop`` when given (its caller runs it: ``poolkit serve`` on the main thread), else on an
    engine-loop thread the app starts and stops with its lifespan. ``cors``: which other origins' pages
    may call the API from a browser (none by default).
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
                logger.info("model %s: max_batch_tokens %d (tokens per forward pass), max_model_len %d", name,
                            worker.max_batch_tokens, engine.max_model_len)
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
        await asyncio.to_thread(state.drain)  # off the event loop: results of the last requests still arrive
        if own_loop:
            engine_loop.stop()
        logger.info("shut down")

    app = FastAPI(title="poolkit", summary="OpenAI-compatible server for pooling models", lifespan=lifespan,
                  docs_url=None, redoc_url=None)  # /docs: routes/docs.py serves it without a CDN
    app.state.poolkit = state
    errors.install(app)

    app.add_middleware(Guard, state=state)
    if cors and cors.allowed_origins:  # added last: the outermost layer, before the API key check
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=cors.allowed_origins, allow_methods=cors.allowed_methods,
                           allow_headers=cors.allowed_headers, allow_credentials=cors.allow_credentials)
    for router in ROUTERS:
        app.include_router(router)
    return app
