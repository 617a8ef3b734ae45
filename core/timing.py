"""Wall-clock timing of calls and its summary (median and 95th percentile, ms), for the benchmarks."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np


def call_ms(fn: Callable[[], object]) -> float:
    """Milliseconds one call of `fn` takes (wall clock)."""
    t = time.perf_counter()
    fn()
    return 1000 * (time.perf_counter() - t)


def calls_ms(fn: Callable[[], object], n: int) -> list[float]:
    """Milliseconds of each of `n` calls of `fn`."""
    return [call_ms(fn) for _ in range(n)]


def latency_stats(ms: list[float], decimals: int = 2) -> dict[str, float]:
    """{"p50_ms": median, "p95_ms": 95th percentile (linear interpolation), "n": count}, rounded to `decimals`."""
    return {
        "p50_ms": round(float(np.median(ms)), decimals),
        "p95_ms": round(float(np.percentile(ms, 95)), decimals),
        "n": len(ms),
    }


__all__ = ["call_ms", "calls_ms", "latency_stats"]
