"""The engine loop: one thread runs every served model's forward passes, one batch at a time.

``poolkit serve`` runs it on the process's main thread and HTTP on another. GNU OpenMP keeps the
worker team of one thread docked; a second thread that runs parallel ops while that one lives pays a
team fork per op (~50 us: a GELU over 60k floats takes 22 us from the first thread, 72 us from
another), and the main thread is the one most programs touch torch from first. In-process users
(tests, Ray Serve) run the loop on a thread of its own. Which model runs next, and what goes into its
batch, is the queues' business (:mod:`poolkit.server.queue`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

logger = logging.getLogger("poolkit.server")


class EngineLoop:
    """Runs every served model's forward passes, one batch at a time, on the thread that calls :meth:`run`."""

    def __init__(self) -> None:
        self.cv = threading.Condition()
        self.workers: list[Any] = []  # each a poolkit.server.queue.ModelWorker (which imports this module)
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
                worker = self._most_due()
                while worker is None:
                    if self._stopping or (until is not None and until()):
                        self.idle = False  # nobody will take direct jobs any more
                        return
                    self.idle = True
                    self.cv.wait(timeout=0.25 if until is not None else None)
                    worker = self._most_due()
                self.idle = False
                jobs, worker._jobs = worker._jobs, []
                if not jobs:
                    try:
                        batch = worker._next_batch()
                    except Exception as exc:  # a bug in batching: fail what is queued, keep serving
                        logger.error("forming a batch failed; failing the model's queued requests", exc_info=True)
                        worker._fail_queued(exc)
                        continue
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

    def _most_due(self) -> Any:
        """A worker with requests to tokenize first, else the one holding the most due queued request."""
        with_jobs = [w for w in self.workers if w._jobs]
        if with_jobs:
            return with_jobs[0]
        ready = [w for w in self.workers if w._active]
        return min(ready, key=lambda w: min(r.key() for r in w._active)) if ready else None
