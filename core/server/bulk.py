"""A served model's bulk lane: a second tokenizer thread, with a tokenizer of its own, for big requests.

A request whose body is over :data:`BIG_REQUEST_BYTES` is tokenized here instead of on the model's
tokenizer thread, so that seconds of tokenizing megabytes delay no small request (HF tokenizers release
the GIL); a second after it, the heap pages it freed are handed back to the OS.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

BIG_REQUEST_BYTES = 64 * 1024  # a body this large is tokenized on the bulk thread (~ one forward pass of work)
TRIM_DELAY = 1.0  # seconds after a big request before freed heap pages are handed back (its response is sent by then)
request_bytes_var: contextvars.ContextVar[int] = contextvars.ContextVar("poolkit_request_bytes", default=0)


def is_big() -> bool:
    """Whether this request's body (``request_bytes_var``, set by the route) goes to the bulk lane."""
    return request_bytes_var.get() > BIG_REQUEST_BYTES


class BulkLane:
    """The bulk thread of one model, started on first use with a copy of the engine's tokenizer."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._trim_pending = False

    def executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                processor = getattr(self.engine, "input_processor", None)
                own = getattr(processor, "use_own_tokenizer", None)
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="poolkit-tokenize-bulk",
                                                    initializer=own)
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
                self.executor().submit(trim)
            except RuntimeError:  # shut down
                pass

        loop.call_later(TRIM_DELAY, submit)

    def shutdown(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False)
