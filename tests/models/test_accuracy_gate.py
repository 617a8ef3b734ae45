"""The accuracy gate's plumbing: variant specs, and the fold decoders of a cross-validation."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from dermaseg.core.segment.artifacts import file_sha256, resolve_variant
from dermaseg.core.settings import Settings
from dermaseg.models import accuracy_gate as gate
from dermaseg.models.build import TUNED_DECODERS, TUNED_INT8


def test_variant_spec_names_runtime_and_tuned_decoder(models_dir: Path) -> None:
    settings = Settings(cache_dir=models_dir.parent)
    float_engine = gate.open_variant("onnx/float", settings)
    int8_engine = gate.open_variant("onnx/int8", settings)
    assert float_engine.backend.files.tuned_decoder.name == TUNED_DECODERS["fp32"]
    assert int8_engine.backend.files.tuned_decoder.name == TUNED_INT8
    assert float_engine.model_id != int8_engine.model_id


def test_fold_decoders_replace_the_shipped_one(models_dir: Path, tmp_path: Path) -> None:
    cv = tmp_path / "cv"
    for k, held_out in enumerate((["a", "c"], ["b"])):
        (cv / f"fold{k}").mkdir(parents=True)
        shutil.copy(models_dir / TUNED_DECODERS["fp32"], cv / f"fold{k}" / TUNED_DECODERS["fp32"])
        (cv / f"fold{k}" / "fold.json").write_text(json.dumps({"config": {}, "held_out": held_out}))
    folds = gate.read_folds(cv)
    assert folds == {"a": cv / "fold0", "b": cv / "fold1", "c": cv / "fold0"}
    files = resolve_variant(models_dir, "fp32")
    fp32 = gate.fold_decoder(files, cv / "fold1", int8=False)
    assert fp32.tuned_decoder == cv / "fold1" / TUNED_DECODERS["fp32"]
    int8 = gate.fold_decoder(files, cv / "fold1", int8=True)  # made as the build makes the shipped one
    assert int8.tuned_decoder == cv / "fold1" / TUNED_INT8
    assert int8.tuned_decoder_sha256 == file_sha256(models_dir / TUNED_INT8)
    with pytest.raises(SystemExit, match="fold"):
        gate.read_folds(tmp_path / "empty")
