"""The engine loop: requests from all clients are queued per prompt and packed by a token budget.

Request handlers tokenize on a tokenizer thread (``ModelWorker.prepare``) and submit one item per
prompt to their model's queue. One :class:`EngineLoop` serves every model: it takes the model whose
oldest item waited longest, adds that model's queued items of the same task while the batch's padded
size stays within ``max_batch_tokens``, runs one forward pass and hands each result back to its
request's future on the event loop. So a big request is split across batches, small ones are
combined, and the event loop never blocks on tokenization or the forward pass. Admission control
(``max_concurrent_requests``, ``max_queue_tokens``) turns overload into a 429, never a hang.

``poolkit serve`` runs the engine loop on the process's main thread and HTTP on another: GNU
OpenMP keeps its worker threads docked only for the initial thread, so each parallel op started
from any other thread pays a team fork (~50 us; ~3 ms of a 9 ms MiniLM forward on 2 cores,
docs/performance.md). In-process users (tests, Ray Serve) run it on a thread of its own.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from poolkit.server.errors import APIError, Overloaded

_arrival = itertools.count()


@dataclass
class _Item:
    adapter: Any
    tokens: Any
    params: Any
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    seq: int


class EngineLoop:
    """Runs every served model's forward passes, one batch at a time, on the thread that calls :meth:`run`."""

    def __init__(self) -> None:
        self.cv = threading.Condition()
        self.workers: list[ModelWorker] = []
        self._stopping = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Run on a daemon thread of its own (in-process servers)."""
        self._thread = threading.Thread(target=self.run, name="poolkit-engine-loop", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Finish what is queued, then return from :meth:`run`."""
        with self.cv:
            self._stopping = True
            self.cv.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=30)

    def run(self, until: Callable[[], bool] | None = None) -> None:
        """Serve batches until :meth:`stop` (or ``until()`` turns true) and the queues are drained."""
        while True:
            with self.cv:
                worker = self._oldest()
                while worker is None:
                    if self._stopping or (until is not None and until()):
                        return
                    self.cv.wait(timeout=0.25 if until is not None else None)
                    worker = self._oldest()
                batch = worker._next_batch()
                worker._busy = True
            try:
                worker._run(batch)
            finally:
                with self.cv:
                    worker._busy = False
                    self.cv.notify_all()  # wakes ModelWorker.close waiting for its queue to drain

    def _oldest(self) -> ModelWorker | None:
        ready = [w for w in self.workers if w._queue]
        return min(ready, key=lambda w: w._queue[0].seq) if ready else None


class ModelWorker:
    """Queues one :class:`poolkit.Engine`'s prompts for an :class:`EngineLoop`; safe for any number of requests."""

    def __init__(self, engine: Any, engine_loop: EngineLoop, max_batch_tokens: int | None = None,
                 max_concurrent_requests: int = 512, max_queue_tokens: int = 1_000_000, metrics: Any = None) -> None:
        self.engine = engine
        self.engine_loop = engine_loop
        self.max_batch_tokens = max_batch_tokens or engine.max_batch_tokens
        self.max_concurrent_requests = max_concurrent_requests
        self.max_queue_tokens = max_queue_tokens
        self.metrics = metrics
        self._cv = engine_loop.cv
        self._queue: deque[_Item] = deque()
        self._queued_tokens = 0
        self._requests = 0
        self._running = True
        self._busy = False
        # one tokenizer thread: HF fast tokenizers must not be reconfigured from two threads at once
        self._tokenizer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="poolkit-tokenize")
        with self._cv:
            engine_loop.workers.append(self)

    # --- request side (event loop) -----------------------------------------------------------------

    async def prepare(self, *args: Any, **kwargs: Any) -> Any:
        """``Engine.prepare`` on the tokenizer thread."""
        return await self.run_in_tokenizer(self.engine.prepare, *args, **kwargs)

    async def run_in_tokenizer(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._tokenizer, lambda: fn(*args, **kwargs))

    async def submit(self, adapter: Any, tokens: list[Any], params: list[Any]) -> list[Any]:
        """Queue one request's prompts; the pooled tensors come back in order."""
        if not tokens:
            return []
        n_tokens = sum(len(t.ids) for t in tokens)
        loop = asyncio.get_running_loop()
        with self._cv:
            if not self._running:
                raise APIError(503, "The server is shutting down")
            if self._requests >= self.max_concurrent_requests:
                raise Overloaded(f"Too many concurrent requests (max_concurrent_requests={self.max_concurrent_requests})")
            if self._queued_tokens + n_tokens > self.max_queue_tokens:
                raise Overloaded(f"The queue is full: {self._queued_tokens} tokens queued, this request has "
                                 f"{n_tokens}, max_queue_tokens={self.max_queue_tokens}")
            self._requests += 1
            items = [_Item(adapter, t, p, loop.create_future(), loop, next(_arrival)) for t, p in zip(tokens, params)]
            self._queue.extend(items)
            self._queued_tokens += n_tokens
            self._cv.notify_all()
        if self.metrics:
            self.metrics.queue_depth.set(len(self._queue))
        try:
            return list(await asyncio.gather(*(i.future for i in items)))
        finally:
            with self._cv:
                self._requests -= 1

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    def close(self, timeout: float = 30) -> None:
        """Stop admitting prompts and wait (up to ``timeout``) for the engine loop to finish the queued ones."""
        deadline = time.monotonic() + timeout
        with self._cv:
            self._running = False
            while (self._queue or self._busy) and time.monotonic() < deadline:
                self._cv.wait(timeout=0.1)
        self._tokenizer.shutdown(wait=False)

    # --- engine loop side -----------------------------------------------------------------------------

    def _next_batch(self) -> list[_Item]:
        """Oldest item first, then queued items of the same task while the padded size fits the budget."""
        head = self._queue.popleft()
        batch, longest = [head], len(head.tokens.ids)
        rest: deque[_Item] = deque()
        while self._queue:
            item = self._queue.popleft()
            n = len(item.tokens.ids)
            if item.adapter is head.adapter and (len(batch) + 1) * max(longest, n) <= self.max_batch_tokens:
                batch.append(item)
                longest = max(longest, n)
            else:
                rest.append(item)
        self._queue.extendleft(reversed(rest))
        self._queued_tokens -= sum(len(i.tokens.ids) for i in batch)
        return batch

    def _run(self, batch: list[_Item]) -> None:
        """One forward pass; a failure fails this batch's requests, never the loop."""
        start = time.perf_counter()
        try:
            results = self.engine.run_batch(batch[0].adapter, [i.tokens for i in batch], [i.params for i in batch])
            outcome = [(i, r, None) for i, r in zip(batch, results)]
        except Exception as exc:
            outcome = [(i, None, exc) for i in batch]
        if self.metrics:
            self.metrics.batch_tokens.observe(sum(len(i.tokens.ids) for i in batch))
            self.metrics.batch_seconds.observe(time.perf_counter() - start)
            self.metrics.queue_depth.set(len(self._queue))
        for item, result, exc in outcome:
            item.loop.call_soon_threadsafe(_settle, item.future, result, exc)


def _settle(future: asyncio.Future, result: Any, exc: BaseException | None) -> None:
    if future.done():  # the client went away
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)
