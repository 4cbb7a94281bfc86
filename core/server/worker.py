"""One engine loop per model: requests from all clients are queued per prompt and packed by a token budget.

Request handlers tokenize on a tokenizer thread (``prepare``) and submit one item per prompt;
the loop thread takes the oldest item, adds queued items of the same task while the batch's
padded size stays within ``max_batch_tokens``, runs one forward pass and hands each result back to
its request's future on the event loop. So a big request is split across batches, small ones are
combined, and the event loop never blocks on tokenization or the forward pass. Admission control
(``max_concurrent_requests``, ``max_queue_tokens``) turns overload into a 429, never a hang.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from poolkit.server.errors import APIError, Overloaded


@dataclass
class _Item:
    adapter: Any
    tokens: Any
    params: Any
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop


class ModelWorker:
    """Owns one :class:`poolkit.Engine`; safe to call from any number of concurrent requests."""

    def __init__(self, engine: Any, max_batch_tokens: int | None = None, max_concurrent_requests: int = 512,
                 max_queue_tokens: int = 1_000_000, metrics: Any = None) -> None:
        self.engine = engine
        self.max_batch_tokens = max_batch_tokens or engine.max_batch_tokens
        self.max_concurrent_requests = max_concurrent_requests
        self.max_queue_tokens = max_queue_tokens
        self.metrics = metrics
        self._queue: deque[_Item] = deque()
        self._queued_tokens = 0
        self._requests = 0
        self._cv = threading.Condition()
        self._running = True
        # one tokenizer thread: HF fast tokenizers must not be reconfigured from two threads at once
        self._tokenizer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="poolkit-tokenize")
        self._thread = threading.Thread(target=self._loop, name="poolkit-engine-loop", daemon=True)
        self._thread.start()

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
            items = [_Item(adapter, t, p, loop.create_future(), loop) for t, p in zip(tokens, params)]
            self._queue.extend(items)
            self._queued_tokens += n_tokens
            self._cv.notify()
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

    def close(self) -> None:
        with self._cv:
            self._running = False
            self._cv.notify_all()
        self._thread.join(timeout=30)
        self._tokenizer.shutdown(wait=False)

    # --- engine loop thread ---------------------------------------------------------------------------

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

    def _loop(self) -> None:
        while True:
            with self._cv:
                while self._running and not self._queue:
                    self._cv.wait()
                if not self._queue:
                    return  # stopped and drained
                batch = self._next_batch()
            start = time.perf_counter()
            try:
                results = self.engine.run_batch(batch[0].adapter, [i.tokens for i in batch], [i.params for i in batch])
                outcome = [(i, r, None) for i, r in zip(batch, results)]
            except Exception as exc:  # a failure fails this batch's requests, never the loop
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
