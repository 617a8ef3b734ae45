"""CoreMLBackend: package verification, routing, availability; runs on macOS only where CoreML predicts.

The packages here are tiny synthetic ML programs with the real input/output contract, built in a
fraction of a second with coremltools' MIL builder (no torch), so loading, checksums and corruption can
be tested everywhere. Parity of the real LiteMedSAM packages is in tests/models/test_coreml_export.py.
"""

from __future__ import annotations

import json
import platform
import shutil
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest

from dermaseg.core.errors import DermasegError, ModelArtifactError, PromptError
from dermaseg.core.segment.backends import coreml as bc
from dermaseg.core.segment.backends import coreml_packages as cp
from dermaseg.core.segment.preprocess import DECODER_OUTPUTS, TUNED_OUTPUTS, DecoderInputs

ct = pytest.importorskip("coremltools")

ON_MAC, WHY_NOT = bc.available()
needs_coreml = pytest.mark.skipif(not ON_MAC, reason=f"CoreML predict unavailable: {WHY_NOT}")
_ENC_WEIGHT = np.random.default_rng(0).standard_normal((256, 3, 4, 4)).astype(np.float32) * 0.1


def _fake_encoder() -> object:
    """image (1, 3, 256, 256) -> image_embeddings = 4x4 stride-4 convolution with a fixed weight."""
    from coremltools.converters.mil import Builder as mb

    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 3, 256, 256))], opset_version=ct.target.macOS13)
    def prog(image):  # noqa: ANN001, ANN202
        return mb.conv(x=image, weight=_ENC_WEIGHT, strides=[4, 4], pad_type="valid", name="image_embeddings")

    inputs = [ct.TensorType(name="image", shape=(1, 3, 256, 256), dtype=np.float32)]
    return cp.ml_program(prog, inputs, ["image_embeddings"])


def fake_decode(emb: np.ndarray, coords: np.ndarray, labels: np.ndarray, mask: np.ndarray, has: np.ndarray):  # noqa: ANN201
    """numpy twin of the fake decoder: logits = mask * has + upsampled channel mean + sum(coords, labels)
    (+ 1000 in the box package, to tell the two apart); iou = spatial mean of the logits."""
    e = emb.mean(axis=1, keepdims=True).repeat(4, axis=2).repeat(4, axis=3)
    m = mask * has[0] + e + coords.sum() + labels.sum()
    return np.tile(m, (1, 4, 1, 1)), np.tile(m.mean(axis=(2, 3)), (1, 4))


def _fake_decoder(n_range: tuple[int, int] | None, offset: float, features: bool = False) -> object:
    """The fake decoder package; with `features`, also mask_features: the logits' first plane x 32."""
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import get_new_symbol

    n = 2 if n_range is None else get_new_symbol()
    specs = [(1, 256, 64, 64), (1, n, 2), (1, n), (1, 1, 256, 256), (1,)]

    @mb.program(input_specs=[mb.TensorSpec(shape=s) for s in specs], opset_version=ct.target.macOS13)
    def prog(image_embeddings, point_coords, point_labels, mask_input, has_mask_input):  # noqa: ANN001, ANN202
        s = mb.add(x=mb.reduce_sum(x=point_coords), y=mb.reduce_sum(x=point_labels))
        e = mb.reduce_mean(x=image_embeddings, axes=[1], keep_dims=True)
        e = mb.upsample_nearest_neighbor(x=e, scale_factor_height=4, scale_factor_width=4)
        m = mb.add(x=mb.add(x=mb.mul(x=mask_input, y=has_mask_input), y=e), y=mb.add(x=s, y=offset))
        logits = mb.tile(x=m, reps=[1, 4, 1, 1], name="low_res_logits")
        iou = mb.reduce_mean(x=logits, axes=[2, 3], name="iou_predictions")
        if features:
            return logits, iou, mb.tile(x=m, reps=[1, 32, 1, 1], name="mask_features")
        return logits, iou

    dim = 2 if n_range is None else ct.RangeDim(n_range[0], n_range[1], 2)
    inputs = [
        ct.TensorType(name="image_embeddings", shape=(1, 256, 64, 64), dtype=np.float32),
        ct.TensorType(name="point_coords", shape=ct.Shape((1, dim, 2)), dtype=np.float32),
        ct.TensorType(name="point_labels", shape=ct.Shape((1, dim)), dtype=np.float32),
        ct.TensorType(name="mask_input", shape=(1, 1, 256, 256), dtype=np.float32),
        ct.TensorType(name="has_mask_input", shape=(1,), dtype=np.float32),
    ]
    return cp.ml_program(prog, inputs, list(TUNED_OUTPUTS if features else DECODER_OUTPUTS))


BOX_OFFSET = 1000.0
TUNED_OFFSET = 2000.0


@pytest.fixture(scope="session")
def fake_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models directory holding the four synthetic packages (read-only: copy before corrupting)."""
    root = tmp_path_factory.mktemp("coreml-fake")
    models = {
        "encoder": _fake_encoder(),
        "decoder_box": _fake_decoder(None, BOX_OFFSET),
        "decoder_points": _fake_decoder((1, cp.MAX_POINTS), 0.0),
        "decoder_tuned": _fake_decoder((1, cp.TUNED_MAX_POINTS), TUNED_OFFSET, features=True),
    }
    for role, model in models.items():
        model.save(str(root / cp.PACKAGE_NAMES[role]))
    return root


@pytest.fixture()
def models_copy(fake_models: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "models"
    shutil.copytree(fake_models, dst)
    return dst


def _encoder(models: Path) -> Path:
    return models / cp.PACKAGE_NAMES["encoder"]


# ---------------------------------------------------------------- availability


@pytest.mark.skipif(sys.platform == "darwin", reason="checks the reason given off macOS")
def test_available_says_no_off_macos_and_why() -> None:
    ok, why = bc.available()
    assert ok is False
    assert "macOS" in why and platform.system() in why
    assert bc.CoreMLBackend.available() == (ok, why)


@pytest.mark.parametrize(
    ("facts", "ok", "phrase"),
    [
        (("Linux", "", "9.0", False), False, "only on macOS"),
        (("Windows", "", None, False), False, "Windows"),
        (("Darwin", "12.6", "9.0", True), False, "macOS 13 or later"),
        (("Darwin", "14.5", None, False), False, "pip install"),
        (("Darwin", "14.5", "9.0", False), False, "native CoreML runtime"),
        (("Darwin", "13.0", "9.0", True), True, "CoreML available"),
        (("Darwin", "15.1.1", "9.0", True), True, "macOS 15.1.1"),
    ],
)
def test_availability_facts(facts: tuple, ok: bool, phrase: str) -> None:
    got_ok, why = bc.availability(*facts)
    assert got_ok is ok
    assert phrase in why


# ---------------------------------------------------------------- digest


def test_digest_is_stable_and_location_independent(fake_models: Path, tmp_path: Path) -> None:
    enc = _encoder(fake_models)
    first = cp.package_digest(enc)
    assert first == cp.package_digest(enc)
    assert len(first) == 64 and int(first, 16) >= 0
    moved = tmp_path / "elsewhere.mlpackage"
    shutil.copytree(enc, moved)
    assert cp.package_digest(moved) == first


def test_digest_ignores_manifest_identifiers(models_copy: Path) -> None:
    """coremltools writes fresh random item identifiers into Manifest.json on every save."""
    enc = _encoder(models_copy)
    before = cp.package_digest(enc)
    manifest_file = enc / "Manifest.json"
    manifest = json.loads(manifest_file.read_text())
    renamed = {old: str(uuid.uuid4()).upper() for old in manifest["itemInfoEntries"]}
    manifest["itemInfoEntries"] = {renamed[k]: v for k, v in manifest["itemInfoEntries"].items()}
    manifest["rootModelIdentifier"] = renamed[manifest["rootModelIdentifier"]]
    manifest_file.write_text(json.dumps(manifest, indent=2))
    assert cp.package_digest(enc) == before


def test_digest_sees_one_changed_weight_byte(models_copy: Path) -> None:
    enc = _encoder(models_copy)
    before = cp.package_digest(enc)
    weights = enc / "Data" / "com.apple.CoreML" / "weights" / "weight.bin"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert cp.package_digest(enc) != before


def test_packages_have_distinct_digests(fake_models: Path) -> None:
    digests = {cp.package_digest(p) for p in cp.CoreMLPackages.in_dir(fake_models).roles().values()}
    assert len(digests) == 4


# ---------------------------------------------------------------- verification


def test_verify_accepts_the_contract(fake_models: Path) -> None:
    for role, path in cp.CoreMLPackages.in_dir(fake_models).roles().items():
        assert cp.verify_package(path, role) == cp.package_digest(path)
        inputs, outputs = cp.tensor_specs(cp.load_checked_spec(path, role))
        assert all(t.dtype == "FLOAT32" for t in inputs + outputs)


def _assert_rebuild_error(excinfo: pytest.ExceptionInfo) -> None:
    assert isinstance(excinfo.value, DermasegError)
    assert "dermaseg models build" in str(excinfo.value)


def test_missing_package(tmp_path: Path) -> None:
    with pytest.raises(ModelArtifactError) as e:
        bc.CoreMLBackend(tmp_path)
    _assert_rebuild_error(e)
    assert "not found" in str(e.value)


@pytest.mark.parametrize(
    "damage",
    ["manifest_garbage", "manifest_missing", "spec_garbage", "spec_missing", "weights_truncated", "weights_missing"],
)
def test_corrupt_encoder_package(models_copy: Path, damage: str) -> None:
    enc = _encoder(models_copy)
    data = enc / "Data" / "com.apple.CoreML"
    what, how = damage.split("_")
    target = {
        "manifest": enc / "Manifest.json",
        "spec": data / "model.mlmodel",
        "weights": data / "weights" / "weight.bin",
    }[what]
    if how == "missing":
        target.unlink()
    elif how == "truncated":
        target.write_bytes(target.read_bytes()[:100])
    else:
        target.write_bytes(b"\x08\x07this is not a package file\xff\xfe")
    with pytest.raises(ModelArtifactError) as e:
        bc.CoreMLBackend(models_copy)
    _assert_rebuild_error(e)
    assert enc.name in str(e.value)


def test_package_in_the_wrong_role(models_copy: Path) -> None:
    box = models_copy / cp.PACKAGE_NAMES["decoder_box"]
    shutil.rmtree(box)
    shutil.copytree(models_copy / cp.PACKAGE_NAMES["decoder_points"], box)
    with pytest.raises(ModelArtifactError, match="decoder_box contract") as e:
        bc.CoreMLBackend(models_copy)
    _assert_rebuild_error(e)


def test_checksum_mismatch(fake_models: Path) -> None:
    with pytest.raises(ModelArtifactError, match="checksum mismatch") as e:
        bc.CoreMLBackend(fake_models, expected_sha256={"encoder": "0" * 64})
    _assert_rebuild_error(e)


@pytest.mark.skipif(ON_MAC, reason="CoreML is available here")
def test_backend_off_macos_verifies_then_says_why(fake_models: Path) -> None:
    expected = {role: cp.package_digest(p) for role, p in cp.CoreMLPackages.in_dir(fake_models).roles().items()}
    with pytest.raises(bc.CoreMLUnavailableError) as e:
        bc.CoreMLBackend(fake_models, expected_sha256=expected)
    assert str(e.value) == WHY_NOT


def _write_manifest(models: Path, coreml: dict) -> None:
    (models / "manifest.json").write_text(json.dumps({"format": 1, "coreml": coreml}))


def _coreml_entry(models: Path) -> dict:
    packages = cp.CoreMLPackages.in_dir(models).roles()
    return {"built": True, "packages": {role: {"sha256": cp.package_digest(p)} for role, p in packages.items()}}


def test_artifacts_present(models_copy: Path, tmp_path: Path) -> None:
    assert cp.artifacts_present(models_copy)
    assert not cp.artifacts_present(tmp_path / "nothing")
    shutil.rmtree(models_copy / cp.PACKAGE_NAMES["decoder_tuned"])  # optional
    assert cp.artifacts_present(models_copy)
    assert "decoder_tuned" not in cp.CoreMLPackages.in_dir(models_copy).roles()
    shutil.rmtree(models_copy / cp.PACKAGE_NAMES["decoder_points"])
    assert not cp.artifacts_present(models_copy)


@pytest.mark.parametrize(
    "coreml", [None, {"built": False, "reason": "disabled (--no-coreml)"}, {"built": True, "packages": {}}]
)
def test_open_without_a_coreml_build(models_copy: Path, coreml: dict | None) -> None:
    _write_manifest(models_copy, coreml)
    with pytest.raises(ModelArtifactError, match="no CoreML packages") as e:
        bc.CoreMLBackend.open(models_copy)
    _assert_rebuild_error(e)
    if coreml and "reason" in coreml:
        assert coreml["reason"] in str(e.value)


def test_open_checks_the_manifest_digests(models_copy: Path) -> None:
    entry = _coreml_entry(models_copy)
    entry["packages"]["decoder_points"]["sha256"] = "f" * 64
    _write_manifest(models_copy, entry)
    with pytest.raises(ModelArtifactError, match="checksum mismatch") as e:
        bc.CoreMLBackend.open(models_copy)
    assert cp.PACKAGE_NAMES["decoder_points"] in str(e.value)


def test_open_checks_a_listed_tuned_package_is_there(models_copy: Path) -> None:
    """The manifest lists the tuned decoder: its package missing is an error, not a silent fallback."""
    _write_manifest(models_copy, _coreml_entry(models_copy))
    shutil.rmtree(models_copy / cp.PACKAGE_NAMES["decoder_tuned"])
    with pytest.raises(ModelArtifactError, match="not found") as e:
        bc.CoreMLBackend.open(models_copy)
    assert cp.PACKAGE_NAMES["decoder_tuned"] in str(e.value)


@pytest.mark.skipif(ON_MAC, reason="CoreML is available here")
def test_open_without_the_tuned_package_verifies_the_rest(models_copy: Path) -> None:
    """A build without fine-tuned weights lists three packages: opening gets as far as CoreML itself."""
    shutil.rmtree(models_copy / cp.PACKAGE_NAMES["decoder_tuned"])
    _write_manifest(models_copy, _coreml_entry(models_copy))
    with pytest.raises(bc.CoreMLUnavailableError):
        bc.CoreMLBackend.open(models_copy)


def test_open_without_manifest(models_copy: Path) -> None:
    with pytest.raises(ModelArtifactError, match="dermaseg models build"):
        bc.CoreMLBackend.open(models_copy)


@pytest.mark.skipif(ON_MAC, reason="CoreML is available here")
def test_open_off_macos_says_why(models_copy: Path) -> None:
    _write_manifest(models_copy, _coreml_entry(models_copy))
    with pytest.raises(bc.CoreMLUnavailableError, match="only on macOS"):
        bc.CoreMLBackend.open(models_copy)


# ---------------------------------------------------------------- routing


def _points(n: int, labels: list[float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    coords = np.linspace(5.0, 250.0, 2 * n, dtype=np.float32).reshape(1, n, 2)
    lab = np.asarray([labels if labels is not None else [1.0] * n], dtype=np.float32)
    return coords, lab


@pytest.mark.parametrize(
    ("n", "labels", "role"),
    [
        (2, [2.0, 3.0], "decoder_box"),
        (2, [3.0, 2.0], "decoder_points"),
        (2, [1.0, 0.0], "decoder_points"),
        (1, None, "decoder_points"),
        (3, [2.0, 3.0, 0.0], "decoder_points"),
        (16, None, "decoder_points"),
    ],
)
def test_decoder_role(n: int, labels: list[float] | None, role: str) -> None:
    assert bc.decoder_role(*_points(n, labels)) == role


@pytest.mark.parametrize("n", [0, 17, 40])
def test_decoder_role_point_count(n: int) -> None:
    with pytest.raises(PromptError, match="point" if n == 0 else "at most 16"):
        bc.decoder_role(*_points(n))


@pytest.mark.parametrize(("n", "labels"), [(2, [2.0, 3.0]), (1, None), (17, None), (66, None)])
def test_decoder_role_tuned_takes_every_prompt(n: int, labels: list[float] | None) -> None:
    assert bc.decoder_role(*_points(n, labels), tuned=True) == "decoder_tuned"


def test_decoder_role_tuned_point_count() -> None:
    assert cp.TUNED_MAX_POINTS == 66  # a box and the 64 clicks `Prompts` allows
    with pytest.raises(PromptError, match="at most 66"):
        bc.decoder_role(*_points(67), tuned=True)


def test_decoder_role_rejects_nan_and_bad_shapes() -> None:
    coords, labels = _points(3)
    coords[0, 1, 0] = np.nan
    with pytest.raises(PromptError, match="non-finite"):
        bc.decoder_role(coords, labels)
    with pytest.raises(ValueError, match=r"\(1, N, 2\)"):
        bc.decoder_role(np.zeros((3, 2), np.float32), np.zeros((1, 3), np.float32))
    with pytest.raises(ValueError):
        bc.decoder_role(np.zeros((1, 3, 2), np.float32), np.zeros((1, 2), np.float32))


def test_expected_specs_point_range() -> None:
    inputs, _ = cp.expected_specs("decoder_points")
    by_name = {t.name: t for t in inputs}
    assert by_name["point_coords"].shape_range == ((1, 1), (1, 16), (2, 2))
    assert by_name["point_labels"].shape_range == ((1, 1), (1, 16))
    tuned = {t.name: t for t in cp.expected_specs("decoder_tuned")[0]}
    assert tuned["point_coords"].shape_range == ((1, 1), (1, 66), (2, 2))
    with pytest.raises(ValueError):
        cp.expected_specs("decoder")


# ---------------------------------------------------------------- running (macOS only)


@pytest.fixture(scope="session")
def backend(fake_models: Path) -> bc.CoreMLBackend:
    if not ON_MAC:
        pytest.skip(f"CoreML predict unavailable: {WHY_NOT}")
    return bc.CoreMLBackend(fake_models)


@needs_coreml
def test_encode_shape_dtype_and_values(backend: bc.CoreMLBackend, fake_models: Path) -> None:
    assert backend.name == "coreml"
    assert backend.encoder_id == cp.package_digest(_encoder(fake_models))
    assert backend.model_id.startswith("litemedsam/coreml-fp16/" + backend.encoder_id[:12])
    x = np.random.default_rng(1).random((1, 3, 256, 256), dtype=np.float32)
    emb = backend.encode(x)
    assert emb.shape == (1, 256, 64, 64) and emb.dtype == np.float32
    patches = x.reshape(1, 3, 64, 4, 64, 4)
    want = np.einsum("bchiwj,ocij->bohw", patches, _ENC_WEIGHT)
    np.testing.assert_allclose(emb, want, atol=0.05, rtol=0.02)  # fp16 compute


@needs_coreml
@pytest.mark.parametrize(("n", "labels"), [(2, [2.0, 3.0]), (2, [1.0, 1.0]), (1, None), (5, None), (16, None)])
def test_decode_routes_and_matches(backend: bc.CoreMLBackend, n: int, labels: list[float] | None) -> None:
    rng = np.random.default_rng(n)
    emb = rng.standard_normal((1, 256, 64, 64)).astype(np.float32)
    coords, lab = _points(n, labels)
    coords /= 50.0  # keep the sums in a range fp16 resolves well
    mask = rng.standard_normal((1, 1, 256, 256)).astype(np.float32)
    has = np.ones(1, np.float32)
    logits, iou = backend.decode(DecoderInputs(emb, coords, lab, mask, has))
    assert logits.shape == (1, 4, 256, 256) and logits.dtype == np.float32
    assert iou.shape == (1, 4) and iou.dtype == np.float32
    want_logits, want_iou = fake_decode(emb, coords, lab, mask, has)
    offset = BOX_OFFSET if bc.decoder_role(coords, lab) == "decoder_box" else 0.0
    np.testing.assert_allclose(logits, want_logits + offset, atol=0.6, rtol=0.01)
    np.testing.assert_allclose(iou, want_iou + offset, atol=0.6, rtol=0.01)
    assert backend.has_tuned_decoder
    logits, iou = backend.decode(DecoderInputs(emb, coords, lab, mask, has), tuned=True)
    offset = TUNED_OFFSET
    np.testing.assert_allclose(logits, want_logits + offset, atol=0.6, rtol=0.01)
    np.testing.assert_allclose(iou, want_iou + offset, atol=0.6, rtol=0.01)
    logits_f, iou_f, features = backend.decode_features(DecoderInputs(emb, coords, lab, mask, has))
    assert np.array_equal(logits_f, logits) and np.array_equal(iou_f, iou)
    assert features.shape == (1, 32, 256, 256) and np.array_equal(features[:, :4], logits)


@needs_coreml
def test_decode_too_many_points(backend: bc.CoreMLBackend) -> None:
    coords, lab = _points(17)
    zeros = np.zeros((1, 256, 64, 64), np.float32)
    with pytest.raises(PromptError, match="at most 16"):
        backend.decode(DecoderInputs.of(zeros, coords, lab))
