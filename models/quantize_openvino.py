"""NNCF post-training int8 quantisation of the encoder for the OpenVINO backend (build time).

The float32 ONNX encoder is read by OpenVINO, calibrated on a fixed subset of the dev images and their
left-right flips, and saved as an OpenVINO IR pair (`encoder-int8-ov.xml/.bin`). Settings as measured on
the dev set (../shared/notes/speed-facts.md): NNCF's transformer preset (MIXED: symmetric weights,
asymmetric activations), SmoothQuant with alpha 0.5 on MatMul inputs; run with bf16 inference it encoded in
0.43x the time of ORT fp32 at the same box Dice.

Calibration subset (fixed, so a build is reproducible and the held-out images are known): the dataset's
cases in manifest order, even positions (0, 2, 4, ...: 33 of the 65 dev images), plus the left-right flips
of every other one of those (positions 0, 4, 8, ...: 17 flips). The odd positions are never seen.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from dermaseg.core.segment.artifacts import OPENVINO_INT8_BIN, OPENVINO_INT8_XML
from dermaseg.core.segment.preprocess import encoder_input

# isort: split
# After dermaseg.core, which switches OpenVINO's telemetry off (core.offline); build time only (the export extra).
import nncf  # noqa: E402
import openvino as ov  # noqa: E402

SMOOTH_QUANT_ALPHA = 0.5  # MatMul; NNCF's transformer default 0.95 was not measured better


def calibration_split(n: int) -> tuple[list[int], list[int], list[int]]:
    """Positions (in dataset order) of the calibration images, of those also used flipped, and of the
    held-out images, for a dataset of `n` cases."""
    calib = list(range(0, n, 2))
    return calib, calib[::2], list(range(1, n, 2))


def calibration_inputs(rgbs: Sequence[np.ndarray], flipped: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Encoder inputs float32 (1, 3, 256, 256): each image, then the flips (uint8 (H, W, 3) RGB arrays)."""
    return [encoder_input(rgb)[0] for rgb in rgbs] + [
        encoder_input(np.ascontiguousarray(rgb[:, ::-1]))[0] for rgb in flipped
    ]


def quantize_encoder(
    onnx_path: Path,
    out_dir: Path,
    inputs: list[np.ndarray],
    log: Callable[[str], None] = print,
) -> dict:
    """Quantise `onnx_path` with NNCF on `inputs` (calibration encoder inputs) into `out_dir`'s IR pair.

    Returns what the manifest records (tools, settings, sample count, seconds); the caller adds the files.
    """
    started = time.perf_counter()
    model = ov.Core().read_model(str(onnx_path))
    quantized = nncf.quantize(
        model,
        nncf.Dataset(inputs),
        model_type=nncf.ModelType.TRANSFORMER,
        subset_size=len(inputs),
        advanced_parameters=nncf.AdvancedQuantizationParameters(
            smooth_quant_alphas=nncf.AdvancedSmoothQuantParameters(matmul=SMOOTH_QUANT_ALPHA)
        ),
    )
    tmp_xml = out_dir / ("tmp-" + OPENVINO_INT8_XML)
    ov.save_model(quantized, str(tmp_xml), compress_to_fp16=False)
    tmp_xml.with_suffix(".bin").replace(out_dir / OPENVINO_INT8_BIN)
    tmp_xml.replace(out_dir / OPENVINO_INT8_XML)  # the IR's .xml names no .bin: the pair is found by stem
    seconds = round(time.perf_counter() - started, 1)
    log(f"int8 encoder (NNCF, {len(inputs)} calibration inputs) in {seconds} s")
    return {
        "method": "nncf.quantize, model_type=TRANSFORMER (preset MIXED), SmoothQuant MatMul alpha "
        f"{SMOOTH_QUANT_ALPHA}, fast bias correction",
        "nncf": nncf.__version__,
        "openvino": ov.__version__,
        "calibration_inputs": len(inputs),
        "seconds": seconds,
    }
