"""The bench scripts' timer: the median of repeated calls, which a load spike on this shared machine moves less than the mean."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_seconds(fn: Callable[[], object], n: int, warmup: int = 0) -> float:
    """Median wall time of ``n`` calls of ``fn``, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
