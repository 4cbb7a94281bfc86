"""A served model's bulk lane: a second tokenizer thread, with a tokenizer of its own, for big requests.

A request whose body is over :data:`BIG_REQUEST_BYTES` is tokenized here instead of on the model's
tokenizer thread, so that seconds of tokenizing megabytes delay no small request (HF tokenizers release
the GIL); a second after it, the heap pages it freed are handed back to the OS.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

BIG_REQUEST_BYTES = 64 * 1024  # a body this large is tokenized on the bulk thread (~ one forward pass of work)
TRIM_DELAY = 1.0  # seconds after a big request before freed heap pages are handed back (its response is sent by then)
logger = logging.getLogger("poolkit.server")
request_bytes_var: contextvars.ContextVar[int] = contextvars.ContextVar("poolkit_request_bytes", default=0)


def is_big() -> bool:
    """Whether this request's body (``request_bytes_var``, set by the route) goes to the bulk lane."""
    return request_bytes_var.get() > BIG_REQUEST_BYTES


class BulkLane:
    """The bulk thread of one model, started with the server (:meth:`executor`, off the event loop: a copy
    takes tens of milliseconds) with a copy of the model's tokenizer, made under
    the model's tokenizer lock (a copy taken mid-call could keep that call's settings, e.g. its truncation
    side). A tokenizer that cannot be copied (some remote-code ones) leaves the lane closed: big requests
    then take the tokenizer thread, under its lock, as small ones do."""

    def __init__(self, engine: Any, tokenizer_lock: threading.Lock) -> None:
        self.engine = engine
        self._tokenizer_lock = tokenizer_lock
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._trimmer: ThreadPoolExecutor | None = None  # the trim's thread when the lane is closed
        self._closed = False
        self._trim_pending = False

    def executor(self) -> ThreadPoolExecutor | None:
        """The bulk thread, or None when the lane cannot run (no tokenizer copy)."""
        with self._lock:
            if self._closed:
                return None
            if self._executor is None:
                processor = getattr(self.engine, "input_processor", None)
                if processor is None:  # an engine that does not tokenize (a test double)
                    self._closed = True
                    return None
                try:
                    with self._tokenizer_lock:
                        own = processor.copy_tokenizer()
                except Exception:
                    logger.warning("the tokenizer of %s cannot be copied: big requests are tokenized on the "
                                   "tokenizer thread", getattr(self.engine, "served_model_name", "a model"),
                                   exc_info=True)
                    self._closed = True
                    return None
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="poolkit-tokenize-bulk",
                                                    initializer=processor.use_tokenizer, initargs=(own,))
            return self._executor

    def trim_later(self, loop: asyncio.AbstractEventLoop) -> None:
        """Hand the pages a big request freed back to the OS (glibc keeps them otherwise, and RSS stays at its
        peak) once its response is sent: one trim on the bulk thread, ``TRIM_DELAY`` seconds later."""
        if self._trim_pending:
            return
        self._trim_pending = True

        def trim() -> None:
            from poolkit.model.loading import release_freed_memory

            self._trim_pending = False
            release_freed_memory(collect=False)

        def submit() -> None:
            try:
                (self.executor() or self._trim_pool()).submit(trim)
            except RuntimeError:  # shut down
                pass

        loop.call_later(TRIM_DELAY, submit)

    def _trim_pool(self) -> ThreadPoolExecutor:
        """Where the trim runs when the lane is closed: a thread of its own (a trim takes milliseconds)."""
        with self._lock:
            if self._trimmer is None:
                self._trimmer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="poolkit-trim")
            return self._trimmer

    def shutdown(self) -> None:
        with self._lock:
            self._closed = True
            for pool in (self._executor, self._trimmer):
                if pool is not None:
                    pool.shutdown(wait=False)
