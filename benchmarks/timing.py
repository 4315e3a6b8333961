"""One timer for the benchmarks: the best of N runs (on a shared machine the minimum is the least disturbed)."""

from __future__ import annotations

import time
from collections.abc import Callable


def best_time(fn: Callable[[], object], repeats: int, warmup: bool = True) -> float:
    """Seconds of the fastest of `repeats` calls of fn, after one untimed call when `warmup`."""
    if warmup:
        fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best
