"""Every ONNX variant against the torch model on real dev images: box, points, mask input; the build."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from dermaseg.core.errors import ModelArtifactError
from dermaseg.core.evaluation.dataset import box_from_mask
from dermaseg.core.image import load_image
from dermaseg.core.segment.artifacts import DEFAULT_TUNED, VariantFiles, resolve_variant
from dermaseg.core.segment.backends.onnx_runtime import OnnxBackend
from dermaseg.core.segment.preprocess import DecoderInputs, encoder_input, mask_from_logits
from dermaseg.core.segment.prompts import Prompts
from dermaseg.core.segment.segmenter import decoder_points
from dermaseg.core.settings import Settings
from dermaseg.models.build import (
    DEFAULT_VARIANT,
    TUNED_DECODERS,
    TUNED_INT8,
    TUNED_INT8_VARIANT,
    VARIANTS,
    build,
    mask_iou,
)
from dermaseg.models.litemedsam import load_model, reference_decode

# Minimum box-prompt mask IoU vs torch fp32 on every dev image (README, "Model variants").
MIN_BOX_IOU = {"fp32": 0.999, "fp16": 0.99, "fp32-bundled": 0.999}
SUBSET = 16  # images per non-default variant: the default variant is checked on all of them


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.set_num_threads(2)
    return load_model()


@pytest.fixture(scope="module")
def reference(model, dev_data) -> list[dict]:
    """Per dev image: input, transform, torch embedding and torch head-0 mask for the GT box + 5 px."""
    out = []
    with torch.no_grad():
        for case in dev_data:
            image = load_image(case.image)
            x, t = encoder_input(image.rgb)
            emb = model.image_encoder(torch.from_numpy(x))
            box = box_from_mask(case.load_mask(), 5)
            bt = torch.from_numpy(t.to_model(np.array(box).reshape(2, 2)).reshape(1, 4))
            logits, _ = reference_decode(model, emb, None, None, bt, None)
            out.append(
                {
                    "id": case.id,
                    "x": x,
                    "t": t,
                    "emb": emb,
                    "box": box,
                    "mask": mask_from_logits(logits[0, 0].numpy(), t),
                }
            )
    return out


def _torch_decode(model, emb: torch.Tensor, prompts: Prompts, t, mask_input) -> np.ndarray:
    """The upstream prompt encoder (which pads point-only prompts itself) and mask decoder."""
    coords = labels = box = mi = None
    if prompts.points:
        coords = torch.from_numpy(t.to_model(np.array(prompts.points).reshape(-1, 2))[None])
        labels = torch.tensor([prompts.labels], dtype=torch.float32)
    if prompts.box is not None:
        box = torch.from_numpy(t.to_model(np.array(prompts.box).reshape(2, 2)).reshape(1, 4))
    if mask_input is not None:
        mi = torch.from_numpy(mask_input[None, None])
    return reference_decode(model, emb, coords, labels, box, mi)[0].numpy()


def _decode(backend: OnnxBackend, emb: np.ndarray, prompts: Prompts, t, mask_input=None, tuned=False) -> np.ndarray:
    coords, labels = decoder_points(prompts, t)
    return backend.decode(DecoderInputs.of(emb, coords, labels, mask_input), tuned=tuned)[0]


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_box_mask_iou_vs_torch(variant: str, models_dir: Path, reference: list[dict]) -> None:
    backend = OnnxBackend(resolve_variant(models_dir, variant))
    cases = reference if variant in (DEFAULT_VARIANT, "fp32") else reference[:: max(1, len(reference) // SUBSET)]
    ious = {}
    for ref in cases:
        logits = _decode(backend, backend.encode(ref["x"]), Prompts(box=ref["box"]), ref["t"])
        ious[ref["id"]] = mask_iou(mask_from_logits(logits[0, 0], ref["t"]), ref["mask"])
    worst = min(ious, key=ious.get)
    print(f"{variant}: box IoU vs torch fp32 min {ious[worst]:.4f} ({worst}), mean {np.mean(list(ious.values())):.4f}")
    assert ious[worst] >= MIN_BOX_IOU[variant]


def test_fp32_embedding_and_decoder_match_torch(models_dir: Path, model, reference: list[dict]) -> None:
    backend = OnnxBackend(resolve_variant(models_dir, "fp32"))
    for ref in reference[:4]:
        emb = backend.encode(ref["x"])
        assert np.abs(emb - ref["emb"].numpy()).max() < 1e-3
        t = ref["t"]
        x0, y0, x1, y1 = ref["box"]
        centre = ((x0 + x1) / 2, (y0 + y1) / 2)
        corner = (x0 + 3, y0 + 3)
        prev = _decode(backend, emb, Prompts(box=ref["box"]), t)[0, 0]
        for prompts, mask_input in [
            (Prompts(points=(centre,), labels=(1,)), None),
            (Prompts(points=(centre, corner), labels=(1, 0)), None),
            (Prompts(box=ref["box"], points=(corner,), labels=(0,)), None),
            (Prompts(box=ref["box"]), prev),
        ]:
            ours = _decode(backend, emb, prompts, t, mask_input)
            coords = (
                torch.from_numpy(t.to_model(np.array(prompts.points).reshape(-1, 2))[None]) if prompts.points else None
            )
            labels = torch.tensor([prompts.labels], dtype=torch.float32) if prompts.points else None
            box = (
                None
                if prompts.box is None
                else torch.from_numpy(t.to_model(np.array(prompts.box).reshape(2, 2)).reshape(1, 4))
            )
            mi = None if mask_input is None else torch.from_numpy(mask_input[None, None])
            theirs, _ = reference_decode(model, ref["emb"], coords, labels, box, mi)
            theirs = theirs.numpy()
            assert np.abs(ours - theirs).max() < 1e-2, prompts
            for head in range(4):
                assert mask_iou(mask_from_logits(ours[0, head], t), mask_from_logits(theirs[0, head], t)) > 0.995


@pytest.mark.parametrize(
    ("variant", "tuned", "floor"), [("fp32", "float", 0.999), ("fp16", "float", 0.98), ("fp32", "int8", 0.97)]
)
def test_tuned_decoder_matches_its_torch_model(
    variant: str, tuned: str, floor: float, models_dir: Path, reference
) -> None:
    """The exported tuned decoder against torch with the shipped deltas applied: clicks, mask input, box."""
    from dermaseg.models.build import tuned_model

    tuned_net = tuned_model()
    backend = OnnxBackend(resolve_variant(models_dir, variant, tuned=tuned))
    for ref in reference[:3]:
        t, emb = ref["t"], backend.encode(ref["x"])
        x0, y0, x1, y1 = ref["box"]
        centre, corner = ((x0 + x1) / 2, (y0 + y1) / 2), (x0 + 3, y0 + 3)
        first = Prompts(points=(centre,), labels=(1,))
        for prompts, mask_input in [
            (first, None),
            (Prompts(points=(centre, corner), labels=(1, 0)), _decode(backend, emb, first, t, tuned=True)[0, 0]),
            (Prompts(box=ref["box"], points=(corner,), labels=(0,)), None),
        ]:
            ours = _decode(backend, emb, prompts, t, mask_input, tuned=True)
            with torch.no_grad():
                theirs = _torch_decode(tuned_net, torch.from_numpy(emb), prompts, t, mask_input)
            assert mask_iou(mask_from_logits(ours[0, 0], t), mask_from_logits(theirs[0, 0], t)) >= floor, prompts


def test_build_is_idempotent_and_detects_tampering(models_dir: Path, tmp_path: Path) -> None:
    messages: list[str] = []
    before = {p.name: p.stat().st_mtime_ns for p in models_dir.iterdir()}
    build(models_dir, coreml=False, log=messages.append)
    assert "up to date" in messages[-1]
    assert {p.name: p.stat().st_mtime_ns for p in models_dir.iterdir()} == before

    copy = tmp_path / "models"
    shutil.copytree(models_dir, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    dec = manifest["variants"]["fp32"]["decoder"]
    with open(copy / dec, "r+b") as f:
        f.seek(1000)
        f.write(b"\x00\x01\x02\x03")
    with pytest.raises(ModelArtifactError, match="dermaseg models build"):
        resolve_variant(copy, "fp32")
    (copy / dec).unlink()
    with pytest.raises(ModelArtifactError, match="missing"):
        resolve_variant(copy, "fp32")
    with pytest.raises(ModelArtifactError, match="unknown model variant"):
        resolve_variant(models_dir, "nope")


def test_manifest_records_contract_and_parity(models_dir: Path) -> None:
    manifest = json.loads((models_dir / "manifest.json").read_text())
    assert manifest["source"]["sha256"].startswith("79d8c9dc")
    assert "min-max" in manifest["preprocess"]["normalise"]
    assert set(manifest["variants"]) == set(VARIANTS) and manifest["default"] == DEFAULT_VARIANT
    assert manifest["source"]["tuned_weights"] is not None
    for variant in manifest["variants"].values():
        assert 0.9 <= variant["parity"]["box_iou_min"] <= 1.0
    for name in TUNED_DECODERS:
        variant = manifest["variants"][name]
        assert variant["tuned_decoder"] in manifest["files"] and variant["tuned_parity"]["click_iou_min"] >= 0.9
    assert "tuned_decoder" not in manifest["variants"]["fp32-bundled"]
    int8 = manifest["variants"][TUNED_INT8_VARIANT]
    assert int8["tuned_decoder_int8"] == TUNED_INT8 and int8["tuned_int8_parity"]["click_iou_min"] >= 0.9


def test_the_tuned_decoder_in_int8_or_float(models_dir: Path) -> None:
    """`resolve_variant(tuned=...)`: the fp32 variant offers its tuned decoder in int8; "auto" takes the
    gate's choice where it exists, the variant's own precision elsewhere."""

    def tuned_file(variant: str, tuned: str) -> str:
        files = resolve_variant(models_dir, variant, tuned=tuned)
        assert files.tuned_decoder is not None
        return files.tuned_decoder.name

    assert tuned_file("fp32", "int8") == TUNED_INT8
    assert tuned_file("fp32", "float") == TUNED_DECODERS["fp32"]
    assert tuned_file("fp32", "auto") == (TUNED_INT8 if DEFAULT_TUNED == "int8" else TUNED_DECODERS["fp32"])
    assert tuned_file("fp16", "auto") == TUNED_DECODERS["fp16"]
    assert (
        resolve_variant(models_dir, "fp32").tuned_decoder
        == resolve_variant(models_dir, "fp32", tuned="float").tuned_decoder
    )
    ids = {resolve_variant(models_dir, "fp32", tuned=t).model_id for t in ("int8", "float")}
    assert len(ids) == 2  # provenance names which one answered
    with pytest.raises(ModelArtifactError, match="no int8 tuned decoder"):
        resolve_variant(models_dir, "fp16", tuned="int8")
    with pytest.raises(ModelArtifactError, match="unknown tuned decoder"):
        resolve_variant(models_dir, "fp32", tuned="fp8")
    assert Settings.from_env({"DERMASEG_TUNED_DECODER": "float"}).tuned_decoder == "float"
    assert Settings.from_env({}).tuned_decoder == "auto"


def test_broken_onnx_file_is_a_model_artifact_error(tmp_path: Path) -> None:
    bad = tmp_path / "x.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ModelArtifactError, match="cannot be loaded"):
        OnnxBackend(VariantFiles("x", bad, bad, "0" * 64, "0" * 64))
