"""Prometheus metrics of the server: per route, and per served model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class Metrics:
    """Prometheus metrics in a registry of the app's own (several apps may live in one process)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("poolkit_requests", "HTTP requests by route and status", ["route", "status"],
                                registry=self.registry)
        self.latency = Histogram("poolkit_request_latency_seconds", "Request latency by route", ["route"],
                                 registry=self.registry)
        self.queue_depth = Gauge("poolkit_queue_depth", "Prompts waiting for the engine loop, by model", ["model"],
                                 registry=self.registry)
        self.batch_tokens = Histogram("poolkit_batch_tokens", "Tokens per forward pass, by model", ["model"],
                                      registry=self.registry,
                                      buckets=(16, 64, 256, 512, 1024, 2048, 4096, 8192, 16384))
        self.batch_seconds = Histogram("poolkit_batch_seconds", "Forward pass and pooling time per batch, by model",
                                       ["model"], registry=self.registry)
        self.cancelled_prompts = Counter("poolkit_cancelled_prompts", "Queued prompts dropped because their client "
                                         "went away, by model", ["model"], registry=self.registry)

    def for_model(self, name: str) -> ModelMetrics:
        """The per-model series of one served model (created now, so that /metrics lists them at 0)."""
        return ModelMetrics(self.queue_depth.labels(name), self.batch_tokens.labels(name),
                            self.batch_seconds.labels(name), self.cancelled_prompts.labels(name))


@dataclass
class ModelMetrics:
    queue_depth: Any
    batch_tokens: Any
    batch_seconds: Any
    cancelled_prompts: Any
