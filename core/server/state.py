"""What the server holds: the served models (one engine loop each), limits, metrics, readiness."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from poolkit.server.errors import APIError
from poolkit.server.metrics import Metrics


@dataclass
class ServedModel:
    name: str
    engine: Any
    worker: Any
    cache: dict[Any, Any] = field(default_factory=dict)  # per-model values computed once (the int8 bound)


@dataclass
class Limits:
    """TEI-style request limits: beyond them a request gets 413 (size) or 429 (load)."""

    max_client_batch_size: int = 1024  # inputs in one request
    max_body_bytes: int = 8 * 1024 * 1024
    max_concurrent_requests: int = 512
    max_queue_tokens: int = 1_000_000
    max_batch_tokens: int | None = None


@dataclass
class ServerState:
    limits: Limits = field(default_factory=Limits)
    api_key: str | None = None
    shutdown_timeout: float = 30
    models: dict[str, ServedModel] = field(default_factory=dict)
    ready: bool = False
    shutting_down: bool = False
    load_error: str | None = None
    metrics: Metrics = field(default_factory=Metrics)
    _drain_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def drain(self) -> None:
        """Stop admitting requests (503), give those in flight up to ``shutdown_timeout`` seconds in all,
        then answer what is left with a 503. Idempotent: a second caller waits for the first."""
        with self._drain_lock:
            self.shutting_down = True
            deadline = time.monotonic() + self.shutdown_timeout
            for served in self.models.values():
                served.worker.close(max(0.0, deadline - time.monotonic()))

    def model(self, name: str | None) -> ServedModel:
        """The model a request names (the first one served when it names none); 404 otherwise, 503 if not ready."""
        if self.shutting_down:
            raise APIError(503, "The server is shutting down")
        if not self.ready:
            raise APIError(503, "The model is still loading" if not self.load_error else f"Model failed to load: {self.load_error}")
        if name is None:
            return next(iter(self.models.values()))
        if name not in self.models:
            raise APIError(404, f"The model '{name}' does not exist. Served models: {list(self.models)}", "model")
        return self.models[name]

    def check_batch_size(self, n: int, field: str = "input", empty: str | None = None) -> None:
        """The one rule on a request's inputs, for every API: at least one (``empty``: the message), at most
        ``max_client_batch_size`` (413; TEI answers it as its ``validation`` error, in TEI's words)."""
        limit = self.limits.max_client_batch_size
        if n > limit:
            raise APIError(413, f"batch size {n} > maximum allowed batch size {limit} (the server's "
                                f"max_client_batch_size)", field)
        if n == 0:
            raise APIError(400, empty or f"{field} must not be empty", field, kind="empty")
