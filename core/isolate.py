"""Fault isolation for shared forward passes: one request that breaks a batch fails alone.

Requests are validated before they share a batch, so a forward pass that still raises is a bug in
model, pooler or plugin code triggered by some input. :func:`run_isolated` then runs each request's
part of the batch again on its own: only the requests that raise again get the exception. The
server's engine loop and the ``plugin`` task's runner share it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")
logger = logging.getLogger("poolkit.engine")


def run_isolated(run: Callable[[list[T]], Sequence[Any]], items: list[T],
                 owner: Callable[[T], Hashable]) -> list[tuple[Any, BaseException | None]]:
    """``run(items)`` (one result per item) as ``(result, None)`` pairs; if it raises, each owner's items
    run again alone and an owner whose run raises gets ``(None, exception)`` for each of its items."""
    try:
        return [(r, None) for r in run(items)]
    except Exception as exc:
        groups: dict[Hashable, list[int]] = {}
        for i, item in enumerate(items):
            groups.setdefault(owner(item), []).append(i)
        if len(groups) == 1:
            return [(None, exc)] * len(items)
        logger.warning("a forward pass of %d inputs from %d requests failed (%s: %s); running each request alone",
                       len(items), len(groups), type(exc).__name__, exc)
    out: list[tuple[Any, BaseException | None]] = [(None, None)] * len(items)
    for idx in groups.values():
        try:
            results = run([items[i] for i in idx])
            for i, r in zip(idx, results):
                out[i] = (r, None)
        except Exception as exc:
            for i in idx:
                out[i] = (None, exc)
    return out
