"""Built model artifacts: the manifest written by `dermaseg models build`, and the variants it offers.

Layout of `<cache>/models/`: ONNX files, CoreML packages and `manifest.json`:
{"format": 1, "source": {...checkpoint sha256...}, "preprocess": {...}, "export": {...},
 "files": {name: {"sha256", "bytes"}},
 "variants": {id: {"encoder", "decoder", "parity", optional "tuned_decoder", "tuned_parity",
                   "tuned_decoder_int8", "tuned_int8_parity"}},
 "default": id, "coreml": {...}}
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from dermaseg.core.errors import ModelArtifactError

MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
REBUILD_HINT = "run `dermaseg models build` to (re)build the model artifacts"


@dataclass(frozen=True)
class VariantFiles:
    """One runnable encoder and its decoders. `model_id` names them in provenance and cache keys.

    decoder: the bundled Med-SAM prompt decoder (trained on boxes only).
    tuned_decoder: that decoder fine-tuned on dermoscopy for clicks and hand-drawn boxes
        (`dermaseg models train-clicks`); it answers every prompt when present. None: the variant answers
        boxes with `decoder` and clicks through prompt translation.
    """

    variant: str
    encoder: Path
    decoder: Path
    encoder_sha256: str
    decoder_sha256: str
    tuned_decoder: Path | None = None
    tuned_decoder_sha256: str = ""

    @property
    def model_id(self) -> str:
        tuned = f"-{self.tuned_decoder_sha256[:12]}" if self.tuned_decoder is not None else ""
        return f"litemedsam/{self.variant}/{self.encoder_sha256[:12]}-{self.decoder_sha256[:12]}{tuned}"


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_manifest(models_dir: Path) -> dict:
    """The manifest as a dict, or ModelArtifactError when it is missing or unreadable."""
    path = models_dir / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelArtifactError(f"no model artifacts in {models_dir}: {REBUILD_HINT}") from None
    except (OSError, ValueError) as e:
        raise ModelArtifactError(f"{path} is unreadable ({e}): {REBUILD_HINT}") from None
    if manifest.get("format") != MANIFEST_FORMAT:
        raise ModelArtifactError(f"{path} has an unknown format: {REBUILD_HINT}")
    return manifest


def verify_files(models_dir: Path, manifest: dict, names: list[str] | None = None) -> None:
    """Check size and SHA-256 of the named files (all when None) against the manifest."""
    files = manifest.get("files", {})
    for name in names if names is not None else list(files):
        entry = files.get(name)
        path = models_dir / name
        if entry is None:
            raise ModelArtifactError(f"{name} is not in the manifest: {REBUILD_HINT}")
        if not path.is_file():
            raise ModelArtifactError(f"{path} is missing: {REBUILD_HINT}")
        if path.stat().st_size != entry["bytes"] or file_sha256(path) != entry["sha256"]:
            raise ModelArtifactError(f"{path} does not match its checksum (corrupt or replaced): {REBUILD_HINT}")


# What `tuned="auto"` runs where the variant has both: decided by the accuracy gate of issue 18 (dev set and
# 2-fold cross-validation, box Dice and clicks NoC@90 within 0.003 / 0.1 of float; docs/speed.md).
DEFAULT_TUNED = "int8"


def resolve_variant(
    models_dir: Path, variant: str = "default", verify: bool = True, tuned: str = "float"
) -> VariantFiles:
    """The files of `variant` ("default" means the manifest's default), checked against the manifest.

    tuned: which tuned decoder, "float" (the variant's own precision), "int8" (its int8 matrix products;
    ModelArtifactError when the variant has none) or "auto" (`DEFAULT_TUNED` where built, else float).
    """
    if tuned not in ("auto", "int8", "float"):
        raise ModelArtifactError(f"unknown tuned decoder {tuned!r}: use auto, int8 or float")
    manifest = read_manifest(models_dir)
    variants = manifest.get("variants", {})
    name = manifest.get("default") if variant == "default" else variant
    if name not in variants:
        raise ModelArtifactError(f"unknown model variant {variant!r}; built variants: {', '.join(sorted(variants))}")
    enc, dec, tuned_file = variants[name]["encoder"], variants[name]["decoder"], variants[name].get("tuned_decoder")
    int8 = variants[name].get("tuned_decoder_int8")
    if tuned == "int8" and int8 is None:
        raise ModelArtifactError(f"model variant {name!r} has no int8 tuned decoder: {REBUILD_HINT}")
    if int8 is not None and (tuned == "int8" or (tuned == "auto" and DEFAULT_TUNED == "int8")):
        tuned_file = int8
    if verify:
        verify_files(models_dir, manifest, [enc, dec] + ([tuned_file] if tuned_file else []))
    files = manifest["files"]
    return VariantFiles(
        name,
        models_dir / enc,
        models_dir / dec,
        files[enc]["sha256"],
        files[dec]["sha256"],
        models_dir / tuned_file if tuned_file else None,
        files[tuned_file]["sha256"] if tuned_file else "",
    )


# OpenVINO's int8 encoder (NNCF post-training quantisation of encoder-fp32.onnx, `models/quantize_openvino.py`),
# an IR pair; the manifest's "openvino" section says what it was made from ({"built": false, "reason"} without).
OPENVINO_INT8_XML = "encoder-int8-ov.xml"
OPENVINO_INT8_BIN = "encoder-int8-ov.bin"


def openvino_int8_encoder(models_dir: Path, verify: bool = True) -> tuple[Path, str] | None:
    """(the .xml path, one checksum of the .xml and .bin) of the int8 encoder, or None when not built.

    ModelArtifactError when the manifest lists it but a file is missing or does not match its checksum."""
    manifest = read_manifest(models_dir)
    if not manifest.get("openvino", {}).get("built"):
        return None
    names = [OPENVINO_INT8_XML, OPENVINO_INT8_BIN]
    if verify:
        verify_files(models_dir, manifest, names)
    files = manifest["files"]
    pair = hashlib.sha256("".join(files[n]["sha256"] for n in names).encode()).hexdigest()
    return models_dir / OPENVINO_INT8_XML, pair
