"""The browser benchmark runs end to end: prompts and its no-model reference, timed in the page."""

from __future__ import annotations


def test_bench_browser_times_prompts_against_its_reference(chromium, models_dir, dev_data):
    from devtools import bench_browser as bb

    times = bb.run(dev_data[0].image, 3)
    assert [len(times[k]) for k in ("page", bb.FIRST, bb.REFERENCE, "playwright")] == [3, 3, 3, 3]
    assert all(0 < t < 30000 for v in times.values() for t in v)
    assert times[bb.FIRST] == times["page"]  # a box and clicks after it: no preview, the answer is the first
    rows = bb.table(times).splitlines()
    assert len(rows) == 2 + 4 and rows[2].startswith("| page |") and rows[4].endswith("| 1.00 |")


def test_bench_browser_times_clicks_alone(chromium, models_dir, dev_data):
    from devtools import bench_browser as bb

    times = bb.run(dev_data[0].image, bb.CLICKS_PER_ROUND + 1, clicks_alone=True)
    assert [len(times[k]) for k in ("page", bb.FIRST, bb.REFERENCE)] == [bb.CLICKS_PER_ROUND + 1] * 3
    assert all(0 < t < 30000 for v in times.values() for t in v)
    pairs = list(zip(times[bb.FIRST], times["page"], strict=True))
    assert all(first <= final for first, final in pairs) and any(first < final for first, final in pairs)  # previews
