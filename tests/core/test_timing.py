"""core.timing: the benchmarks' one way to time a call and summarise the times."""

from __future__ import annotations

import time

from dermaseg.core.timing import call_ms, calls_ms, latency_stats


def test_call_ms_measures_wall_clock() -> None:
    assert 20.0 <= call_ms(lambda: time.sleep(0.02)) < 2000.0
    times = calls_ms(lambda: time.sleep(0.005), 3)
    assert len(times) == 3 and all(t >= 5.0 for t in times)


def test_latency_stats_median_p95_and_rounding() -> None:
    ms = [float(v) for v in range(1, 101)]  # 1..100
    assert latency_stats(ms) == {"p50_ms": 50.5, "p95_ms": 95.05, "n": 100}
    assert latency_stats(ms, decimals=1) == {"p50_ms": 50.5, "p95_ms": 95.0, "n": 100}
    assert latency_stats([3.14159]) == {"p50_ms": 3.14, "p95_ms": 3.14, "n": 1}
