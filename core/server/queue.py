"""A served model's queue: admission, fair batching across requests, cancellation, failure isolation.

Request handlers tokenize on the model's tokenizer thread (``ModelWorker.run``), which queues the
request's prompts for the engine loop itself; a request that finds the engine loop idle is
tokenized by the loop itself (one thread hop less). A big request (a body over
:data:`poolkit.server.bulk.BIG_REQUEST_BYTES`) is tokenized on the model's bulk thread instead, with a tokenizer of its own,
so that seconds of tokenizing megabytes delay no small request; a second later the heap pages it
freed are handed back to the OS.

Scheduling is fair across requests, not first-come-first-served per prompt: each batch is filled
round robin from the queued requests, least-served first (a request's ``priority`` comes before
that, lower first, as in vLLM), while the batch fits the budget (:func:`poolkit.batch.batch_fits`).
So a one-text request admitted while a bulk request is computed joins the next forward pass instead
of waiting for the whole bulk request, and the engine loop picks, across models, the model whose
least-served request is most due. A request's prompts are queued longest first (the offline
Engine's order), its results handed back by index; its handler wakes once, when its last prompt is
done. A request whose client went away is dropped from the queue (``cancel``) before its prompts are
computed. A forward pass that raises is re-run request by request (:func:`poolkit.isolate.run_isolated`),
so only the request that triggers a bug fails. Admission control (``max_concurrent_requests``,
``max_queue_tokens``) turns overload into a 429, never a hang.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from poolkit.batch import batch_fits
from poolkit.isolate import run_isolated
from poolkit.request import Prepared, per_request
from poolkit.server.bulk import BulkLane, is_big
from poolkit.server.engine_loop import EngineLoop
from poolkit.server.errors import APIError, Overloaded

logger = logging.getLogger("poolkit.server")
_arrival = itertools.count()
_MAX_DIRECT_JOBS = 8  # requests an idle engine loop tokenizes itself before the tokenizer thread takes over


class _Request:
    """One request in flight: the engine loop fills ``results`` and settles ``future`` once, at the end."""

    __slots__ = ("future", "results", "remaining", "error", "seq", "priority", "served", "cancelled")

    def __init__(self, future: asyncio.Future, priority: int = 0) -> None:
        self.future, self.priority = future, priority
        self.results: list[Any] = []
        self.remaining, self.error, self.served, self.cancelled = 0, None, 0, False
        self.seq = next(_arrival)

    def key(self) -> tuple[int, int, int]:
        """Scheduling order: priority, then the request served least so far, then arrival."""
        return self.priority, self.served, self.seq

    def expect(self, n: int) -> None:
        self.results, self.remaining = [None] * n, n

    def settle(self, index: int, result: Any, exc: BaseException | None) -> None:
        """Engine loop side; the last prompt of the request wakes its handler."""
        if exc is not None and self.error is None:
            self.error = exc
        self.results[index] = result
        self.remaining -= 1
        if self.remaining == 0:
            _post(self.future, self.results, self.error)

    def fail(self, exc: BaseException) -> None:
        """Settle the whole request with ``exc`` now (shutdown), whatever is still queued."""
        self.remaining = -1  # results still in flight find nobody waiting
        _post(self.future, None, exc)


@dataclass
class _Item:
    adapter: Any
    tokens: Any
    params: Any
    request: _Request
    index: int


@dataclass
class _Job:
    """A request handed to an idle engine loop before tokenization: the loop prepares it itself."""

    prepare: Callable[[], Prepared | list[Prepared]]
    request: _Request
    prepared: Any = None


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
        self._active: dict[_Request, deque[_Item]] = {}  # requests with queued prompts, in arrival order
        self._pending = 0  # queued prompts, all requests
        self._jobs: list[_Job] = []  # taken by an idle engine loop, tokenized on its thread
        self._tokenizer_lock = threading.Lock()  # HF fast tokenizers must not be reconfigured from two threads at once
        self._queued_tokens = 0
        self._requests = 0
        self._running = True
        self._busy = False
        self._capped_last = False  # the last batch left longer prompts out for a new request (_next_batch)
        self._tokenizer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="poolkit-tokenize")
        self._bulk = BulkLane(engine, self._tokenizer_lock)  # big requests, with a tokenizer of its own
        self._bulk.executor()  # its tokenizer copied now, not on the event loop of the first big request
        if metrics:
            metrics.queue_depth.set_function(lambda: self._pending)  # read at scrape time
        engine_loop.add(self)

    # --- request side (event loop) -----------------------------------------------------------------

    async def run(self, prepare: Callable[..., Prepared | list[Prepared]], *args: Any, direct: bool = True,
                  priority: int = 0, **kwargs: Any) -> tuple[Any, list[Any]]:
        """``prepare(*args, **kwargs)`` (``Engine.prepare``...: a :class:`Prepared` or a list) on the tokenizer
        thread, which queues its prompts for the engine loop itself; returns it and its pooled tensors in
        prompt order (for a list: one list per request), for :meth:`Prepared.finish`. ``direct=False`` keeps
        ``prepare`` off the idle engine loop's thread (third-party code that could hang it). ``priority``:
        lower is served first. A cancelled caller's queued prompts are dropped before they are computed."""
        prepare = functools.partial(prepare, *args, **kwargs)
        loop = asyncio.get_running_loop()
        request = _Request(loop.create_future(), priority)
        big = is_big() and self._bulk.executor() is not None
        with self._cv:
            if not self._running:
                raise APIError(503, "The server is shutting down")
            if self._requests >= self.max_concurrent_requests:
                raise Overloaded(f"Too many concurrent requests (max_concurrent_requests={self.max_concurrent_requests})")
            self._requests += 1
            # an idle engine loop tokenizes the request itself: one thread hop less (~0.2 ms at 1 client);
            # under load the tokenizer thread does it while the loop runs the current batch
            job = None
            if direct and not big and self.engine_loop.idle and len(self._jobs) < _MAX_DIRECT_JOBS:
                job = _Job(prepare, request)
                self._jobs.append(job)
                self._cv.notify_all()
        try:
            if job is not None:
                pooled = await request.future
                prepared = job.prepared
            else:
                prepared, queued = await self._in_tokenizer_thread(loop, self._prepare_and_queue, prepare, request,
                                                                   big, big=big)
                pooled = await request.future if queued else []
            return prepared, (per_request(prepared, pooled) if isinstance(prepared, list) else pooled)
        except asyncio.CancelledError:
            self.cancel(request)
            raise
        finally:
            with self._cv:
                self._requests -= 1
            if big:
                self._bulk.trim_later(loop)

    async def run_in_tokenizer(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` on the tokenizer thread (a big request's on the bulk thread): ``fn`` must read
        the tokenizer as ``engine.tokenizer`` when it runs, which is that thread's own."""
        loop = asyncio.get_running_loop()
        big = is_big() and self._bulk.executor() is not None

        def call() -> Any:
            if big:
                return fn(*args, **kwargs)
            with self._tokenizer_lock:
                return fn(*args, **kwargs)

        try:
            return await self._in_tokenizer_thread(loop, call, big=big)
        finally:
            if big:
                self._bulk.trim_later(loop)

    async def _in_tokenizer_thread(self, loop: asyncio.AbstractEventLoop, fn: Callable, *args: Any,
                                   big: bool = False) -> Any:
        try:
            future = loop.run_in_executor((self._bulk.executor() if big else None) or self._tokenizer, fn, *args)
        except RuntimeError:  # the tokenizer thread is shut down: the server is draining
            raise APIError(503, "The server is shutting down") from None
        return await future

    def cancel(self, request: _Request) -> None:
        """Drop ``request``'s queued prompts (its client went away); prompts in a running batch finish."""
        with self._cv:
            request.cancelled = True
            queued = self._active.pop(request, None)
            if queued:
                self._pending -= len(queued)
                self._queued_tokens -= sum(len(i.tokens.ids) for i in queued)
                if self.metrics:
                    self.metrics.cancelled_prompts.inc(len(queued))

    def _prepare_and_queue(self, prepare: Callable[[], Prepared | list[Prepared]], request: _Request,
                           own_tokenizer: bool = False) -> tuple[Any, bool]:
        if own_tokenizer:  # the bulk thread: nobody else uses its tokenizer
            prepared = prepare()
        else:
            with self._tokenizer_lock:
                prepared = prepare()
        prompts = [(r.adapter, t, p) for r in (prepared if isinstance(prepared, list) else [prepared])
                   for t, p in zip(r.tokens, r.params)]
        if not prompts:
            return prepared, False
        n_tokens = sum(len(t.ids) for _, t, _ in prompts)
        if n_tokens > self.max_queue_tokens:  # could never be admitted: not a retry-later 429
            raise APIError(413, f"This request has {n_tokens} tokens, more than max_queue_tokens={self.max_queue_tokens}")
        items = [_Item(a, t, p, request, i) for i, (a, t, p) in enumerate(prompts)]
        items.sort(key=lambda item: -len(item.tokens.ids))  # longest first, as the offline Engine batches
        request.expect(len(items))
        with self._cv:
            if not self._running:
                raise APIError(503, "The server is shutting down")
            if request.cancelled:  # the client left while we tokenized
                if self.metrics:
                    self.metrics.cancelled_prompts.inc(len(items))
                return prepared, False
            if self._queued_tokens + n_tokens > self.max_queue_tokens:
                raise Overloaded(f"The queue is full: {self._queued_tokens} tokens queued, this request has "
                                 f"{n_tokens}, max_queue_tokens={self.max_queue_tokens}")
            self._active[request] = deque(items)
            self._pending += len(items)
            self._queued_tokens += n_tokens
            self._cv.notify_all()
        return prepared, True

    def _prepare_job(self, job: _Job) -> None:
        """Engine loop side: tokenize and queue a request that came while the loop was idle."""
        try:
            job.prepared, queued = self._prepare_and_queue(job.prepare, job.request)
        except Exception as exc:  # bad input: the handler gets its 4xx (or a bug its 500)
            _post(job.request.future, None, exc)
            return
        if not queued:
            _post(job.request.future, [], None)

    def close(self, timeout: float = 30) -> None:
        """Stop admitting prompts, wait (up to ``timeout``) for the engine loop to finish the queued ones,
        then answer whatever is still queued with a 503."""
        deadline = time.monotonic() + timeout
        with self._cv:
            self._running = False
            while (self._active or self._jobs or self._busy) and time.monotonic() < deadline:
                self._cv.wait(timeout=0.1)
            jobs, self._jobs = self._jobs, []
            gone = APIError(503, "The server is shutting down: this request did not finish within its shutdown timeout")
            self._fail_queued(gone)
        for job in jobs:
            job.request.fail(gone)
        self._tokenizer.shutdown(wait=False)
        self._bulk.shutdown()

    def _fail_queued(self, exc: BaseException) -> None:
        """Settle every queued request with ``exc`` (the engine loop holds the lock)."""
        left, self._active, self._pending, self._queued_tokens = list(self._active), {}, 0, 0
        for request in left:
            request.fail(exc)

    # --- engine loop side (poolkit.server.engine_loop.Worker; the loop holds the lock) -------------------

    def due(self) -> tuple | None:
        """Requests to tokenize come first; then the most due queued request (:meth:`_Request.key`)."""
        if self._jobs:
            return (0,)
        if self._active:
            return (1, *min(r.key() for r in self._active))
        return None

    def take_work(self) -> Callable[[], None] | None:
        """Tokenize the requests that came while the loop was idle, else the next batch's forward pass."""
        self._busy = True
        jobs, self._jobs = self._jobs, []
        if jobs:
            def prepare() -> None:
                for job in jobs:
                    self._prepare_job(job)

            return prepare
        try:
            batch = self._next_batch()
        except Exception as exc:  # a bug in batching: fail what is queued, keep serving
            logger.error("forming a batch failed; failing the model's queued requests", exc_info=True)
            self._fail_queued(exc)
            return None
        return lambda: self._run(batch)

    def work_done(self) -> None:
        self._busy = False

    def _next_batch(self) -> list[_Item]:
        """Round robin over the queued requests, most due first, one prompt each per round, while the batch
        fits the budget; one task adapter per batch. Priority is strict: the requests of a lower ``priority``
        value fill the batch first, and later levels get only the room they leave."""
        order = sorted(self._active, key=_Request.key)
        head = self._active[order[0]][0]
        adapter = head.adapter
        # A new request's first pass is not made long by much longer prompts of requests already being
        # served (a one-text request beside a bulk one then takes a short pass of its own instead of one
        # of the bulk's full passes, and takes no slot from the bulk); at most every other batch, so
        # the requests being served keep at least half of the passes.
        cap = 2 * len(head.tokens.ids) if order[0].served == 0 and not self._capped_last else None
        self._capped_last = False
        batch: list[_Item] = []
        longest, budget = 0, self.max_batch_tokens
        for level in _priority_levels(order):
            while True:
                added = False
                for request in level:
                    queue = self._active.get(request)
                    if not queue or queue[0].adapter is not adapter:
                        continue
                    n = len(queue[0].tokens.ids)
                    if batch and not batch_fits(len(batch) + 1, max(longest, n), budget):
                        continue
                    if cap is not None and n > cap and request.served > 0:
                        self._capped_last = True  # someone was left out for the new request's sake
                        continue
                    batch.append(queue.popleft())
                    longest, added = max(longest, n), True
                    request.served += 1
                    if not queue:
                        del self._active[request]
                if not added or not batch_fits(len(batch) + 1, longest, budget):  # this level is done
                    break
            if not batch_fits(len(batch) + 1, longest, budget):  # nothing more can fit
                break
        self._pending -= len(batch)
        self._queued_tokens -= sum(len(i.tokens.ids) for i in batch)
        return batch

    def _run(self, batch: list[_Item]) -> None:
        """One forward pass; a failure is re-run request by request, so only the request that causes it fails."""
        start = time.perf_counter()

        def forward(items: list[_Item]) -> list[Any]:
            return self.engine.run_batch(items[0].adapter, [i.tokens for i in items], [i.params for i in items])

        outcome = run_isolated(forward, batch, lambda item: item.request)
        if self.metrics:
            self.metrics.batch_tokens.observe(sum(len(i.tokens.ids) for i in batch))
            self.metrics.batch_seconds.observe(time.perf_counter() - start)
        for item, (result, exc) in zip(batch, outcome):
            if item.request.remaining > 0:
                item.request.settle(item.index, result, exc)


def _priority_levels(order: list[_Request]) -> list[list[_Request]]:
    """``order`` (sorted by :meth:`_Request.key`) split into runs of equal priority."""
    levels: list[list[_Request]] = []
    for request in order:
        if levels and levels[-1][0].priority == request.priority:
            levels[-1].append(request)
        else:
            levels.append([request])
    return levels


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
