"""``serve``: HTTP on a thread, the engine loop on the main thread, signals, graceful shutdown."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from typing import Any

import uvicorn
from fastapi import FastAPI

from poolkit.server.engine_loop import EngineLoop
from poolkit.server.state import ServerState

logger = logging.getLogger("poolkit.server")


class _Server(uvicorn.Server):
    """uvicorn's server, which logs "Uvicorn running on ..." for sockets it was handed too (it does so only
    for those it binds itself), once it listens."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if sockets and self.started:
            self._log_started_message(sockets)


def serve(app: FastAPI, engine_loop: EngineLoop, config: uvicorn.Config,
          sockets: list[socket.socket] | None = None) -> int:
    """Run HTTP on a thread and ``engine_loop`` on this (the main) thread until SIGTERM/SIGINT drains both.

    On the signal the app stops admitting requests (JSON 503) and gives those in flight up to its
    ``shutdown_timeout``; uvicorn's own graceful timeout is set a little longer, as a backstop. A second
    SIGINT (Ctrl-C again while draining) ends the process at once, status 130, without a traceback:
    uvicorn's "force exit" would cancel its tasks and print their CancelledErrors instead.
    ``sockets``: already bound (``poolkit serve`` binds before it loads the models), uvicorn listens on them.

    :returns: the exit status: 0 after a clean shutdown, 1 if the server never started (e.g. port in use).
    """
    state: ServerState = app.state.poolkit
    config.timeout_graceful_shutdown = state.shutdown_timeout + 5
    server = _Server(config)  # on a thread: it leaves signals alone; they are routed to it here
    http = threading.Thread(target=server.run, kwargs={"sockets": sockets}, name="poolkit-http")

    stopping = [False]  # set first thing: a second signal may interrupt this handler (Python runs them nested)

    def on_signal(sig: int, frame: Any) -> None:
        if sig == signal.SIGINT and stopping[0]:  # the second Ctrl-C: the user does not want to wait
            logger.warning("received SIGINT again: exiting now, without waiting for requests in flight")
            logging.shutdown()
            os._exit(128 + signal.SIGINT)
        first, stopping[0] = not stopping[0], True
        if first:
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
