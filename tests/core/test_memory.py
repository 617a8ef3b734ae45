"""What bounds the serving process's memory (issue 18): a backend with a tuned decoder holds no session of the
bundled one until it is asked for, the OpenVINO encoder gives its intermediate tensors back once idle, decoder
runs from many sessions at once hold the memory of two runs, not of all of them, and SimpleITK is loaded only
when a consensus needs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dermaseg.core.segment.artifacts import resolve_variant
from dermaseg.core.segment.backends import openvino as bov
from dermaseg.core.segment.backends.onnx_runtime import OnnxBackend
from dermaseg.core.segment.preprocess import EMBEDDING_SHAPE, DecoderInputs


def test_bundled_decoder_loads_on_first_use(models_dir: Path) -> None:
    files = resolve_variant(models_dir, "default")
    if files.tuned_decoder is None:
        pytest.skip("this build has no tuned decoder")
    backend = OnnxBackend(files, encoder=False)
    assert backend._decoder is None  # one decoder session while the tuned one answers every prompt
    emb = np.zeros(EMBEDDING_SHAPE, np.float32)
    coords, labels = np.array([[[64.0, 64.0], [192.0, 192.0]]], np.float32), np.array([[2.0, 3.0]], np.float32)
    inputs = DecoderInputs.of(emb, coords, labels)  # no mask input
    base, _ = backend.decode(inputs)
    tuned, _ = backend.decode(inputs, tuned=True)
    assert backend._decoder is not None
    assert not np.array_equal(base, tuned)  # the bundled decoder answered, not the tuned one


# `rss()` for the probes below (run after it): the process's resident memory in bytes, from /proc.
RSS = """
def rss():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS"))
"""

# An OpenVINO encode in a fresh process: what it leaves held once idle (activations kept: +85 MiB in bf16;
# released: +4 MiB, measured), and whether a second encode gives the same embedding.
ENCODE_PROBE = """
import sys
from dataclasses import replace
from pathlib import Path
import numpy as np
from dermaseg.core.segment.backends.openvino import RELEASE_AFTER_IDLE_S, OpenVinoBackend
from dermaseg.core.settings import Settings
settings = replace(Settings.from_env(env={}), cache_dir=Path(sys.argv[1]))
backend = OpenVinoBackend.open(settings)
x = np.random.default_rng(0).random((1, 3, 256, 256), dtype=np.float32)
before = rss()
first = backend.encode(x)
import time; time.sleep(RELEASE_AFTER_IDLE_S + 1.0)
held = rss() - before
print(held, int(np.array_equal(first, backend.encode(x))))
"""


@pytest.mark.skipif(not bov.available()[0], reason=bov.available()[1])
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_openvino_encoder_gives_its_activations_back(models_dir: Path) -> None:
    cmd = [sys.executable, "-c", RSS + ENCODE_PROBE, str(models_dir.parent)]
    held, same = map(int, subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.split()[-2:])
    assert held < 40 * 2**20  # the embedding (4 MiB) and small change, not the encoder's activations
    assert same == 1  # released and mapped again, the encoder gives the same answer


# Decoder runs from six threads at once in a fresh process: what ORT's arena keeps afterwards beyond what one
# run at a time left (unbounded: +108-116 MiB here; at most 2 runs at once: +24 MiB; 1: +2 MiB, measured).
CONCURRENT_DECODES_PROBE = """
import sys, threading
from pathlib import Path
import numpy as np
from dermaseg.core.segment.artifacts import resolve_variant
from dermaseg.core.segment.backends.onnx_runtime import OnnxBackend
from dermaseg.core.segment.preprocess import EMBEDDING_SHAPE, DecoderInputs
backend = OnnxBackend(resolve_variant(Path(sys.argv[1]), "default"), encoder=False)
emb = np.random.default_rng(0).standard_normal(EMBEDDING_SHAPE).astype(np.float32)
def decode(clicks):
    coords = np.full((1, clicks + 1, 2), 128.0, np.float32)
    labels = np.array([[1.0] * clicks + [-1.0]], np.float32)  # clicks and SAM's padding point
    backend.decode_features(DecoderInputs.of(emb, coords, labels))
for clicks in range(1, 5):
    decode(clicks)
before = rss()
threads = [threading.Thread(target=lambda: [decode(c) for c in range(1, 5)]) for _ in range(6)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(rss() - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_concurrent_decodes_hold_two_runs_memory(models_dir: Path) -> None:
    if resolve_variant(models_dir, "default").tuned_decoder is None:
        pytest.skip("this build has no tuned decoder")
    cmd = [sys.executable, "-c", RSS + CONCURRENT_DECODES_PROBE, str(models_dir)]
    grown = int(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.split()[-1])
    assert grown < 50 * 2**20  # one more run's activations (DECODER_RUNS_AT_ONCE = 2), not six runs'


# What `dermaseg serve` imports (the CLI and the page), then a STAPLE consensus: whether SimpleITK is loaded.
SERVER_IMPORTS_PROBE = """
import sys
import numpy as np
import dermaseg.webui.cli.main, dermaseg.webui.page.app
print(int("SimpleITK" in sys.modules))
from dermaseg.core.annotation.agreement import staple
square = np.zeros((8, 8), bool)
square[2:6, 2:6] = True
consensus_px = int(staple([square, square]).mask.sum())
print(int("SimpleITK" in sys.modules), consensus_px)
"""


def test_server_loads_simpleitk_only_for_a_consensus() -> None:
    out = subprocess.run([sys.executable, "-c", SERVER_IMPORTS_PROBE], capture_output=True, text=True, check=True)
    at_start, after_staple, consensus_px = map(int, out.stdout.split()[-3:])
    assert at_start == 0  # its ~91 MiB are not held by every server from startup
    assert after_staple == 1 and consensus_px == 16  # the consensus still runs, on SimpleITK
