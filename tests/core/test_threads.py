"""The numeric thread pools: `Engine.open` holds every BLAS pool to `Settings.blas_threads`, including
libraries that load after it (checked in a fresh process, as the app and the CLI run)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

PROBE = """
import json, sys
from dermaseg.core.threads import numeric_threads
before = numeric_threads()
from dermaseg.core.image import load_image
from dermaseg.core.interactive.session import InteractiveSession
from dermaseg.core.annotation.metrics import measure
from dermaseg.core.segment.prompts import Prompts
from dermaseg.core.segment.segmenter import Engine
from dermaseg.core.settings import Settings

engine = Engine.open(Settings.from_env(blas_threads=int(sys.argv[2])))
seg = engine.segmenter()
image = load_image(sys.argv[1])
seg.set_image(image)
result = InteractiveSession(seg).predict(Prompts().with_point(image.width / 2, image.height / 2))
measure(result.mask, image.rgb, None)  # loads SciPy's own OpenBLAS (ConvexHull, ndimage)
import scipy.linalg  # noqa: F401 - the last BLAS user to load
print(json.dumps({"before": before, "after": numeric_threads()}))
"""


@pytest.mark.parametrize("blas_threads", [1, 2])
def test_engine_holds_every_blas_pool(dev_data, models_dir, blas_threads):
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(dev_data[0].image), str(blas_threads)],
        capture_output=True,
        text=True,
        check=True,
        env={k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
        | {"DERMASEG_CACHE_DIR": str(models_dir.parent)},
    )
    pools = json.loads(out.stdout.splitlines()[-1])
    assert pools["after"], "no BLAS library loaded: nothing was checked"
    assert len(pools["after"]) >= 2, pools  # numpy's and SciPy's OpenBLAS
    assert set(pools["after"].values()) == {blas_threads}, pools


def test_blas_threads_from_the_environment():
    from dermaseg.core.settings import Settings

    assert Settings.from_env({}).blas_threads == 1
    assert Settings.from_env({"DERMASEG_BLAS_THREADS": "2"}).blas_threads == 2
