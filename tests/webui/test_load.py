"""Load, small and fast: 1, 2 and 4 concurrent gradio_client sessions against `dermaseg serve`.

Asserts isolation, not timing: every answer shows the session's own image (pixel hash in the image URL)
and its own box, and its outline matches the engine's mask for that image and box better than any other
session's. The server's embedding memory cache is bounded at 2 embeddings while 7 images are open, and
its memory must stay within a bound as the sessions grow. The full table: `python -m devtools.load_test`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from devtools import load_test

pytestmark = pytest.mark.slow

EMBEDDING_BYTES = 4 * 2**20
RSS_GROWTH_LIMIT_MIB = 200  # 1 -> 4 sessions on new images, with a 2-embedding memory cache


def test_concurrent_sessions_are_isolated(dev_data, models_dir: Path, tmp_path: Path) -> None:
    root = dev_data[0].image.parent.parent
    levels = load_test.run(
        sessions=(1, 2, 4),
        prompts=3,
        images_dir=root,
        models_dir=models_dir,
        memory_cache_bytes=2 * EMBEDDING_BYTES,
        max_seconds_per_level=90,
        workdir=tmp_path,
    )
    print("\n" + load_test.table(levels, 2 * EMBEDDING_BYTES))
    for lv in levels:
        assert lv.isolation_ok, lv.problems
        assert lv.prompts == 3 * lv.sessions
        assert lv.min_own_iou >= load_test.MIN_ISOLATION_IOU
    assert levels[-1].rss_mib - levels[0].rss_mib < RSS_GROWTH_LIMIT_MIB
