"""The build step that makes the OpenVINO int8 encoder: real NNCF on the real encoder and dev images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("nncf", reason="the export extra installs nncf")
pytest.importorskip("openvino", reason="openvino is installed on x86-64 Linux / Windows")

from dermaseg.core.evaluation.dataset import box_from_mask  # noqa: E402
from dermaseg.core.image import load_image  # noqa: E402
from dermaseg.core.segment.artifacts import MANIFEST, OPENVINO_INT8_BIN, OPENVINO_INT8_XML, openvino_int8_encoder  # noqa: E402
from dermaseg.models.build import ParityCase, _add_openvino_int8, build_openvino_int8  # noqa: E402
from dermaseg.models.quantize_openvino import calibration_split  # noqa: E402


def test_calibration_split_is_fixed_and_disjoint() -> None:
    calib, flips, held = calibration_split(65)
    assert len(calib) == 33 and len(flips) == 17 and len(held) == 32
    assert calib[:3] == [0, 2, 4] and flips[:3] == [0, 4, 8] and held[:3] == [1, 3, 5]
    assert set(flips) <= set(calib) and not set(calib) & set(held) and set(calib) | set(held) == set(range(65))


def test_without_dev_images_int8_is_skipped_with_a_reason(tmp_path: Path) -> None:
    (tmp_path / OPENVINO_INT8_XML).write_text("stale")
    info = build_openvino_int8(tmp_path, None, log=lambda _: None)
    assert info["built"] is False and "--parity-data" in info["reason"]
    assert not (tmp_path / OPENVINO_INT8_XML).exists()  # a stale IR is never left beside a manifest


@pytest.mark.slow
def test_build_adds_the_int8_encoder(models_dir: Path, dev_data, tmp_path: Path) -> None:
    """An up-to-date build without the int8 encoder gains it (and only it) from a few dev images; the IR
    loads in the backend and encodes to the embedding's shape."""
    from dermaseg.core.segment.backends.openvino import OpenVinoBackend
    from dermaseg.core.settings import Settings

    models = tmp_path / "models"
    models.mkdir()
    manifest = json.loads((models_dir / MANIFEST).read_text())
    manifest.pop("openvino", None)
    for name in [n for n in manifest["files"] if n.endswith(".onnx")]:
        (models / name).symlink_to(models_dir / name)
    manifest["files"] = {n: e for n, e in manifest["files"].items() if n.endswith(".onnx")}
    cases = [ParityCase(load_image(c.image), box_from_mask(c.load_mask())) for c in dev_data[:6]]
    out = _add_openvino_int8(models, manifest, cases, log=lambda _: None)

    info = out["openvino"]
    assert info["built"] and info["calibration_inputs"] == 3 + 2
    assert info["calibration"]["images"] == [cases[i].image.name for i in (0, 2, 4)]
    assert info["source_sha256"] == manifest["files"]["encoder-fp32.onnx"]["sha256"]
    assert json.loads((models / MANIFEST).read_text()) == out
    assert {OPENVINO_INT8_XML, OPENVINO_INT8_BIN} <= set(out["files"])
    assert openvino_int8_encoder(models) is not None  # checksums verified
    xml = (models / OPENVINO_INT8_XML).read_text()
    assert "FakeQuantize" in xml  # quantised, not a copy of the float graph
    backend = OpenVinoBackend.open(Settings(cache_dir=tmp_path, openvino_encoder="int8"))
    x = np.random.default_rng(0).random((1, 3, 256, 256), dtype=np.float32)
    emb = backend.encode(x)
    assert emb.shape == (1, 256, 64, 64) and np.isfinite(emb).all()
