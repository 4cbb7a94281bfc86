"""The engine loop: requests from all clients are queued per prompt and packed by a token budget.

Request handlers tokenize on a tokenizer thread (``ModelWorker.run``), which puts one item per
prompt on their model's queue; a request that finds the engine loop idle is tokenized by the loop
itself (one thread hop less). One :class:`EngineLoop` serves every model: it takes the model whose
oldest item waited longest, adds that model's queued items of the same task while the batch's padded
size stays within ``max_batch_tokens``, runs one forward pass and hands each result back to its
request, whose handler wakes once, when its last prompt is done. So a big request is split across
batches, small ones are combined, and the event loop never blocks on tokenization or the forward
pass. Admission control (``max_concurrent_requests``, ``max_queue_tokens``) turns overload into a
429, never a hang.

``poolkit serve`` runs the engine loop on the process's main thread and HTTP on another. GNU
OpenMP keeps the worker team of one thread docked; a second thread that runs parallel ops while
that one lives pays a team fork per op (~50 us: a GELU over 60k floats takes 22 us from the first
thread, 72 us from another), and the main thread is the one most programs touch torch from first.
In-process users (tests, Ray Serve) run the loop on a thread of its own.
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
_MAX_DIRECT_JOBS = 8  # requests an idle engine loop tokenizes itself before the tokenizer thread takes over


class _Request:
    """One request's prompts in flight: the engine loop fills ``results`` and settles ``future`` once, at the end."""

    __slots__ = ("future", "results", "remaining", "error")

    def __init__(self, future: asyncio.Future, n: int) -> None:
        self.future = future
        self.results, self.remaining, self.error = [None] * n, n, None

    def settle(self, index: int, result: Any, exc: BaseException | None) -> None:
        """Engine loop side; the last prompt of the request wakes its handler."""
        if exc is not None and self.error is None:
            self.error = exc
        self.results[index] = result
        self.remaining -= 1
        if self.remaining == 0:
            _post(self.future, self.results, self.error)


@dataclass
class _Item:
    adapter: Any
    tokens: Any
    params: Any
    request: _Request
    index: int
    seq: int


@dataclass
class _Job:
    """A request handed to an idle engine loop before tokenization: the loop prepares it itself."""

    prepare: Callable[[], Any]
    split: Callable[[Any], tuple[Any, list, list]]
    future: asyncio.Future
    seq: int
    prepared: Any = None


class EngineLoop:
    """Runs every served model's forward passes, one batch at a time, on the thread that calls :meth:`run`."""

    def __init__(self) -> None:
        self.cv = threading.Condition()
        self.workers: list[ModelWorker] = []
        self.idle = False  # waiting for work (guarded by cv): a request may then skip the tokenizer thread
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
                    self.idle = True
                    self.cv.wait(timeout=0.25 if until is not None else None)
                    worker = self._oldest()
                self.idle = False
                jobs, worker._jobs = worker._jobs, []
                if not jobs:
                    batch = worker._next_batch()
                worker._busy = True
            try:
                if jobs:  # requests that came while the loop was idle: tokenize them here, batch them next
                    for job in jobs:
                        worker._prepare_job(job)
                else:
                    worker._run(batch)
            finally:
                with self.cv:
                    worker._busy = False
                    self.cv.notify_all()  # wakes ModelWorker.close waiting for its queue to drain

    def _oldest(self) -> ModelWorker | None:
        """The worker whose oldest job or queued prompt has waited longest."""
        ready = [w for w in self.workers if w._queue or w._jobs]
        return min(ready, key=lambda w: (w._jobs or w._queue)[0].seq) if ready else None


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
        self._jobs: list[_Job] = []  # taken by an idle engine loop, tokenized on its thread
        self._tokenizer_lock = threading.Lock()  # HF fast tokenizers must not be reconfigured from two threads at once
        self._queued_tokens = 0
        self._requests = 0
        self._running = True
        self._busy = False
        self._tokenizer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="poolkit-tokenize")
        if metrics:
            metrics.queue_depth.set_function(lambda: len(self._queue))  # read at scrape time
        with self._cv:
            engine_loop.workers.append(self)

    # --- request side (event loop) -----------------------------------------------------------------

    async def run(self, prepare: Callable[[], Any], split: Callable[[Any], tuple[Any, list, list]] = tuple,
                  direct: bool = True) -> tuple[Any, list[Any]]:
        """``prepare()`` on the tokenizer thread, which queues its prompts for the engine loop itself (no
        hop back through the event loop); returns what ``prepare`` returned and the pooled tensors in order.

        ``split`` turns that value into (task adapter, tokenized prompts, params), e.g. for a ScorePlan;
        the adapter may be a list, one per prompt. ``direct=False`` keeps ``prepare`` off the engine
        loop's thread even when it is idle (third-party code that could hang it).
        """
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        with self._cv:
            if self._requests >= self.max_concurrent_requests:
                raise Overloaded(f"Too many concurrent requests (max_concurrent_requests={self.max_concurrent_requests})")
            if not self._running:
                raise APIError(503, "The server is shutting down")
            self._requests += 1
            # an idle engine loop tokenizes the request itself: one thread hop less (~0.2 ms at 1 client);
            # under load the tokenizer thread does it while the loop runs the current batch
            job = None
            if direct and self.engine_loop.idle and len(self._jobs) < _MAX_DIRECT_JOBS:
                job = _Job(prepare, split, future, next(_arrival))
                self._jobs.append(job)
                self._cv.notify_all()
        try:
            if job is not None:
                pooled = await future
                return job.prepared, pooled
            prepared, queued = await loop.run_in_executor(self._tokenizer, self._prepare_and_queue, prepare, split, future)
            return prepared, (await future if queued else [])
        finally:
            with self._cv:
                self._requests -= 1

    async def run_in_tokenizer(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()

        def call() -> Any:
            with self._tokenizer_lock:
                return fn(*args, **kwargs)

        return await loop.run_in_executor(self._tokenizer, call)

    def _prepare_and_queue(self, prepare: Callable[[], Any], split: Callable, future: asyncio.Future
                           ) -> tuple[Any, bool]:
        with self._tokenizer_lock:
            prepared = prepare()
        adapter, tokens, params = split(prepared)
        if not tokens:
            return prepared, False
        n_tokens = sum(len(t.ids) for t in tokens)
        if n_tokens > self.max_queue_tokens:  # could never be admitted: not a retry-later 429
            raise APIError(413, f"This request has {n_tokens} tokens, more than max_queue_tokens={self.max_queue_tokens}")
        request = _Request(future, len(tokens))
        with self._cv:
            if not self._running:
                raise APIError(503, "The server is shutting down")
            if self._queued_tokens + n_tokens > self.max_queue_tokens:
                raise Overloaded(f"The queue is full: {self._queued_tokens} tokens queued, this request has "
                                 f"{n_tokens}, max_queue_tokens={self.max_queue_tokens}")
            adapters = adapter if isinstance(adapter, list) else [adapter] * len(tokens)
            self._queue.extend(_Item(a, t, p, request, i, next(_arrival))
                               for i, (a, t, p) in enumerate(zip(adapters, tokens, params)))
            self._queued_tokens += n_tokens
            self._cv.notify_all()
        return prepared, True

    def _prepare_job(self, job: _Job) -> None:
        """Engine loop side: tokenize and queue a request that came while the loop was idle."""
        try:
            job.prepared, queued = self._prepare_and_queue(job.prepare, job.split, job.future)
        except Exception as exc:  # bad input: the handler gets its 4xx
            _post(job.future, None, exc)
            return
        if not queued:
            _post(job.future, [], None)

    def close(self, timeout: float = 30) -> None:
        """Stop admitting prompts and wait (up to ``timeout``) for the engine loop to finish the queued ones."""
        deadline = time.monotonic() + timeout
        with self._cv:
            self._running = False
            while (self._queue or self._jobs or self._busy) and time.monotonic() < deadline:
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
            if (len(batch) + 1) * longest > self.max_batch_tokens:  # no later item can fit either
                self._queue.appendleft(item)
                break
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
        for item, result, exc in outcome:
            item.request.settle(item.index, result, exc)


def _post(future: asyncio.Future, result: Any, exc: BaseException | None) -> None:
    """From the engine loop: settle ``future`` on its event loop (gone already at shutdown: nobody waits)."""
    try:
        future.get_loop().call_soon_threadsafe(_settle, future, result, exc)
    except RuntimeError:
        pass


def _settle(future: asyncio.Future, result: Any, exc: BaseException | None) -> None:
    if future.done():  # the client went away
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)
