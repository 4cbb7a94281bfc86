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
from typing import Protocol

logger = logging.getLogger("poolkit.server")


class Worker(Protocol):
    """What the engine loop asks of a served model's queue (:class:`poolkit.server.queue.ModelWorker`); every
    method is called with :attr:`EngineLoop.cv` held but ``work``'s result, which runs without it."""

    def due(self) -> tuple | None:
        """How due its most due work is (lower first), or None when it has none."""

    def take_work(self) -> Callable[[], None] | None:
        """Its next unit of work (tokenize waiting requests, or one forward pass), now taken off its queue."""

    def work_done(self) -> None:
        """The unit of work :meth:`take_work` gave has finished (or raised)."""


class EngineLoop:
    """Runs every served model's forward passes, one batch at a time, on the thread that calls :meth:`run`.

    Workers join with :meth:`add` and share :attr:`cv` (the one lock of the queues); :attr:`idle` tells a
    request handler that the loop is waiting for work (it may then hand the loop its tokenizing)."""

    def __init__(self) -> None:
        self.cv = threading.Condition()
        self.idle = False  # waiting for work (guarded by cv): a request may then skip the tokenizer thread
        self._workers: list[Worker] = []
        self._stopping = False
        self._thread: threading.Thread | None = None

    def add(self, worker: Worker) -> None:
        """Serve ``worker``'s queue from now on."""
        with self.cv:
            self._workers.append(worker)

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
                work = worker.take_work()
            try:
                if work is not None:
                    work()
            finally:
                with self.cv:
                    worker.work_done()
                    self.cv.notify_all()  # wakes ModelWorker.close waiting for its queue to drain

    def _most_due(self) -> Worker | None:
        """The worker whose work is most due (the first added wins a tie)."""
        due = [(d, i) for i, w in enumerate(self._workers) if (d := w.due()) is not None]
        return self._workers[min(due)[1]] if due else None
