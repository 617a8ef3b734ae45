"""CoreML backend (Apple hardware): the LiteMedSAM encoder and prompt decoders as ML programs.

Same duck-typed interface as the ONNX backend: `name`, `model_id`, `encoder_id`, `encode`, `decode`.
Packages built by `dermaseg models build` (see `dermaseg.models.export_coreml`):

- `encoder-fp16.mlpackage`: image (1, 3, 256, 256) -> image_embeddings (1, 256, 64, 64).
- `decoder-box-fp16.mlpackage`: exactly 2 points labelled [2, 3] (a box).
- `decoder-points-fp16.mlpackage`: 1..16 points, any labels.
- `decoder-tuned-fp16.mlpackage` (optional: when the Python package ships fine-tuned decoder weights):
  the decoder fine-tuned for clicks, 1..66 points (a box and up to 64 clicks), answering every prompt.

All inputs and outputs are float32; weights and compute are fp16. coremltools is imported lazily: it is
needed to verify a package's spec (any platform) and to run it (macOS 13+ only).
"""

from __future__ import annotations

import hashlib
import json
import platform
import struct
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from dermaseg.core.errors import DermasegError, ModelArtifactError, PromptError
from dermaseg.core.segment.preprocess import DECODER_INPUTS, FEATURES_SHAPE, MASK_FEATURES, DecoderInputs
from dermaseg.core.segment.prompts import MAX_POINTS as MAX_CLICKS

ENCODER_INPUT = "image"
ENCODER_OUTPUT = "image_embeddings"
MAX_POINTS = 16  # upper bound of the points decoder's RangeDim
TUNED_MAX_POINTS = 2 + MAX_CLICKS  # the tuned decoder gets a box and every click (`RefineSession`)
BOX_LABELS = (2.0, 3.0)  # top-left, bottom-right corner labels
MIN_MACOS = (13, 0)  # packages target macOS 13 / iOS 16 (ML program spec version 7)
REBUILD = "dermaseg models build"

PACKAGE_NAMES = {
    "encoder": "encoder-fp16.mlpackage",
    "decoder_box": "decoder-box-fp16.mlpackage",
    "decoder_points": "decoder-points-fp16.mlpackage",
    "decoder_tuned": "decoder-tuned-fp16.mlpackage",
}
OPTIONAL_ROLES = frozenset({"decoder_tuned"})  # built when fine-tuned decoder weights ship

_IMAGE_SHAPE = (1, 3, 256, 256)
_EMBEDDING_SHAPE = (1, 256, 64, 64)
_MASK_SHAPE = (1, 1, 256, 256)
_LOGITS_SHAPE = (1, 4, 256, 256)
_IOU_SHAPE = (1, 4)
_MANIFEST = "Manifest.json"
_DIGEST_VERSION = b"dermaseg-mlpackage-digest-v1\n"
_BLOB_HEADER = struct.Struct("<IIQQ")  # MIL weight blob metadata: sentinel, dtype, size, data offset
_BLOB_SENTINEL = 0xDEADBEEF


class CoreMLUnavailableError(DermasegError):
    """CoreML cannot run on this machine (not macOS 13+, or coremltools missing); the message says why."""


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output as declared in a package: name, element type and shape.

    shape is the default shape; shape_range gives [lower, upper] per dimension when a dimension is
    flexible (a CoreML RangeDim), else None. dtype is the CoreML array type name, e.g. "FLOAT32".
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    shape_range: tuple[tuple[int, int], ...] | None = None


@dataclass(frozen=True)
class CoreMLPackages:
    """Paths of the packages inside one models directory (the tuned decoder's when it is there)."""

    encoder: Path
    decoder_box: Path
    decoder_points: Path
    decoder_tuned: Path | None = None

    @classmethod
    def in_dir(cls, model_dir: Path) -> CoreMLPackages:
        paths = {role: Path(model_dir) / name for role, name in PACKAGE_NAMES.items()}
        return cls(**{r: p for r, p in paths.items() if r not in OPTIONAL_ROLES or p.is_dir()})

    def roles(self) -> dict[str, Path]:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}


# ---------------------------------------------------------------- package digest and spec checks


def _canonical_manifest(package: Path) -> bytes:
    """Manifest.json without its random item identifiers: the sorted items and which one is the root."""
    try:
        manifest = json.loads((package / _MANIFEST).read_text())
        entries = manifest["itemInfoEntries"]
        root = entries[manifest["rootModelIdentifier"]]["path"]
        items = sorted((str(e["path"]), str(e.get("name", "")), str(e.get("author", ""))) for e in entries.values())
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ModelArtifactError(
            f"{package}: unreadable {_MANIFEST} ({e}); rebuild the models with `{REBUILD}`"
        ) from None
    return json.dumps({"root": root, "items": items}, sort_keys=True).encode()


def package_digest(package: Path) -> str:
    """SHA-256 (hex) over a package directory, independent of where it lies and of when it was saved.

    Hashes every file under the package sorted by relative POSIX path (path, byte size, content);
    Manifest.json enters in a canonical form because coremltools writes fresh random identifiers into it
    on every save. Raises ModelArtifactError when the package is missing or its manifest unreadable.
    """
    package = Path(package)
    if not package.is_dir():
        raise ModelArtifactError(f"{package}: CoreML package not found; build the models with `{REBUILD}`")
    h = hashlib.sha256(_DIGEST_VERSION)
    h.update(_canonical_manifest(package))
    files = sorted((p for p in package.rglob("*") if p.is_file()), key=lambda p: p.relative_to(package).as_posix())
    for path in files:
        rel = path.relative_to(package).as_posix()
        if rel == _MANIFEST:
            continue
        h.update(rel.encode() + b"\0" + path.stat().st_size.to_bytes(8, "little"))
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def _tensor_spec(feature: Any) -> TensorSpec:
    from coremltools.proto import FeatureTypes_pb2

    array = feature.type.multiArrayType
    ranges = None
    if array.WhichOneof("ShapeFlexibility") == "shapeRange":
        ranges = tuple((int(r.lowerBound), int(r.upperBound)) for r in array.shapeRange.sizeRanges)
    return TensorSpec(
        name=feature.name,
        dtype=FeatureTypes_pb2.ArrayFeatureType.ArrayDataType.Name(array.dataType),
        shape=tuple(int(d) for d in array.shape),
        shape_range=ranges,
    )


def tensor_specs(spec: Any) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """(inputs, outputs) declared by a CoreML model spec (`Model_pb2.Model`), in declaration order."""
    return (
        tuple(_tensor_spec(f) for f in spec.description.input),
        tuple(_tensor_spec(f) for f in spec.description.output),
    )


def io_specs(spec: Any) -> dict[str, list[dict[str, Any]]]:
    """`tensor_specs` as JSON-ready dicts: {"inputs": [...], "outputs": [...]}, for the build manifest."""
    inputs, outputs = tensor_specs(spec)
    return {"inputs": [asdict(t) for t in inputs], "outputs": [asdict(t) for t in outputs]}


def expected_specs(role: str) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """The contract a package of `role` (a key of PACKAGE_NAMES) must declare."""
    f32 = "FLOAT32"
    if role == "encoder":
        return (TensorSpec(ENCODER_INPUT, f32, _IMAGE_SHAPE),), (TensorSpec(ENCODER_OUTPUT, f32, _EMBEDDING_SHAPE),)
    if role == "decoder_box":
        n, n_range = 2, None
    elif role == "decoder_points":
        n, n_range = 2, (1, MAX_POINTS)
    elif role == "decoder_tuned":
        n, n_range = 2, (1, TUNED_MAX_POINTS)
    else:
        raise ValueError(f"unknown CoreML package role {role!r}")

    def ranged(shape: tuple[int, ...]) -> tuple[tuple[int, int], ...] | None:
        return None if n_range is None else tuple(n_range if i == 1 else (d, d) for i, d in enumerate(shape))

    inputs = (
        TensorSpec("image_embeddings", f32, _EMBEDDING_SHAPE),
        TensorSpec("point_coords", f32, (1, n, 2), ranged((1, n, 2))),
        TensorSpec("point_labels", f32, (1, n), ranged((1, n))),
        TensorSpec("mask_input", f32, _MASK_SHAPE),
        TensorSpec("has_mask_input", f32, (1,)),
    )
    outputs = (
        TensorSpec("low_res_logits", f32, _LOGITS_SHAPE),
        TensorSpec("iou_predictions", f32, _IOU_SHAPE),
    )
    if role == "decoder_tuned":
        outputs += (TensorSpec(MASK_FEATURES, f32, FEATURES_SHAPE),)
    return inputs, outputs


def _blob_refs(spec: Any) -> list[tuple[str, int]]:
    """(file name, offset) of every weight blob an ML program refers to."""
    refs: list[tuple[str, int]] = []

    def walk(block: Any) -> None:
        for op in block.operations:
            for value in op.attributes.values():
                if value.WhichOneof("value") == "blobFileValue":
                    refs.append((value.blobFileValue.fileName, int(value.blobFileValue.offset)))
            for inner in op.blocks:
                walk(inner)

    for function in spec.mlProgram.functions.values():
        for block in function.block_specializations.values():
            walk(block)
    return refs


def load_checked_spec(package: Path, role: str) -> Any:
    """Parse a package's spec (needs coremltools, any platform) and check it against `expected_specs`.

    Also checks that every weight blob the program refers to lies inside its weight file, which catches
    a missing or truncated weight.bin. Raises ModelArtifactError with the rebuild command otherwise.
    """
    from coremltools.models.utils import load_spec

    try:
        spec = load_spec(str(package))
    except Exception as e:  # libmodelpackage and protobuf raise assorted types
        raise ModelArtifactError(f"{package}: corrupt CoreML package ({e}); rebuild with `{REBUILD}`") from None
    if tensor_specs(spec) != expected_specs(role):
        raise ModelArtifactError(
            f"{package}: inputs/outputs do not match the {role} contract "
            f"(found {tensor_specs(spec)}); rebuild with `{REBUILD}`"
        )
    model_dir = package / "Data" / "com.apple.CoreML"
    for name, offset in _blob_refs(spec):
        blob = model_dir / name.replace("@model_path/", "")
        if not _blob_intact(blob, offset):
            raise ModelArtifactError(
                f"{package}: weight file {blob.name} missing or truncated; rebuild with `{REBUILD}`"
            )
    return spec


def _blob_intact(weight_file: Path, offset: int) -> bool:
    """Whether the MIL blob whose 64-byte header starts at `offset` lies wholly inside `weight_file`.

    Header (little endian): uint32 sentinel 0xDEADBEEF, uint32 data type, uint64 data size in bytes,
    uint64 data offset, then padding.
    """
    try:
        size = weight_file.stat().st_size
        with open(weight_file, "rb") as f:
            f.seek(offset)
            header = f.read(_BLOB_HEADER.size)
    except OSError:
        return False
    if len(header) < _BLOB_HEADER.size:
        return False
    sentinel, _dtype, data_size, data_offset = _BLOB_HEADER.unpack(header)
    return sentinel == _BLOB_SENTINEL and data_offset + data_size <= size


# ---------------------------------------------------------------- availability


def availability(system: str, mac_version: str, coremltools_version: str | None, has_runtime: bool) -> tuple[bool, str]:
    """Whether CoreML can run given these facts, and why (a sentence a person can act on).

    system: `platform.system()`; mac_version: `platform.mac_ver()[0]` ("" off macOS);
    coremltools_version: None when not importable; has_runtime: coremltools' native predict library loaded.
    """
    if system != "Darwin":
        return False, f"CoreML runs only on macOS; this machine runs {system or 'an unknown system'}"
    parts = tuple(int(p) for p in mac_version.split(".")[:2] if p.isdigit())
    if parts < MIN_MACOS:
        return (
            False,
            f"CoreML packages need macOS {MIN_MACOS[0]} or later; this is macOS {mac_version or '?'}",
        )
    if coremltools_version is None:
        return False, "coremltools is not installed: pip install 'coremltools>=9.0'"
    if not has_runtime:
        return False, f"coremltools {coremltools_version} has no native CoreML runtime (libcoremlpython)"
    return True, f"CoreML available (macOS {mac_version}, coremltools {coremltools_version})"


def available() -> tuple[bool, str]:
    """(True, description) when CoreML can run here (macOS 13+ with coremltools), else (False, reason)."""
    system = platform.system()
    mac_version = platform.mac_ver()[0] if sys.platform == "darwin" else ""
    version: str | None = None
    has_runtime = False
    if system == "Darwin":
        try:
            import coremltools

            version = coremltools.__version__
            from coremltools.libcoremlpython import _MLModelProxy  # noqa: F401

            has_runtime = True
        except ImportError:
            pass
    return availability(system, mac_version, version, has_runtime)


# ---------------------------------------------------------------- inputs


def _array(x: np.ndarray, shape: tuple[int, ...], what: str) -> np.ndarray:
    a = np.ascontiguousarray(x, dtype=np.float32)
    if a.shape != shape:
        raise ValueError(f"{what}: expected shape {shape}, got {a.shape}")
    return a


def decoder_role(point_coords: np.ndarray, point_labels: np.ndarray, tuned: bool = False) -> str:
    """The decoder package a prompt needs: "decoder_tuned" for any prompt when `tuned`, else "decoder_box"
    for 2 points labelled [2, 3], else "decoder_points".

    point_coords (1, N, 2) float32 in model input pixels, point_labels (1, N). Raises PromptError when N is
    0 or above the package's bound (MAX_POINTS, TUNED_MAX_POINTS), or a coordinate is not finite;
    ValueError for malformed arrays.
    """
    coords = np.asarray(point_coords)
    labels = np.asarray(point_labels)
    if coords.ndim != 3 or coords.shape[0] != 1 or coords.shape[2] != 2 or labels.shape != coords.shape[:2]:
        raise ValueError(f"point_coords must be (1, N, 2) and point_labels (1, N); got {coords.shape}, {labels.shape}")
    n = coords.shape[1]
    bound = TUNED_MAX_POINTS if tuned else MAX_POINTS
    if n == 0:
        raise PromptError("a prompt needs a box or at least one point")
    if n > bound:
        raise PromptError(
            f"too many prompt points for the CoreML decoder: {n} (at most {bound}, a box counts as 2); "
            "remove some points"
        )
    if not np.all(np.isfinite(coords)):
        raise PromptError("a prompt point has a non-finite coordinate")
    if tuned:
        return "decoder_tuned"
    if n == 2 and tuple(float(v) for v in labels[0]) == BOX_LABELS:
        return "decoder_box"
    return "decoder_points"


# ---------------------------------------------------------------- backend


def _load_mlmodel(package: Path, compute_units: str) -> Any:
    import coremltools as ct

    try:
        model = ct.models.MLModel(str(package), compute_units=ct.ComputeUnit[compute_units])
    except Exception as e:
        raise ModelArtifactError(f"{package}: CoreML cannot load it ({e}); rebuild with `{REBUILD}`") from None
    if getattr(model, "__proxy__", None) is None:
        error = getattr(model, "_framework_error", None) or "unknown error"
        raise ModelArtifactError(f"{package}: CoreML cannot compile it ({error}); rebuild with `{REBUILD}`")
    return model


class CoreMLBackend:
    """LiteMedSAM on CoreML. Construct with the models directory that holds the packages.

    Loading verifies each package (digest against `expected_sha256` when given, spec contract, weight
    file) before asking CoreML to compile it: a missing or corrupt package (or one `expected_sha256`
    names that is not there) raises ModelArtifactError,
    a machine without CoreML raises CoreMLUnavailableError (see `available`).
    compute_units: a `coremltools.ComputeUnit` name ("ALL", "CPU_AND_NE", "CPU_AND_GPU", "CPU_ONLY").
    """

    name = "coreml"

    def __init__(
        self,
        model_dir: Path,
        *,
        compute_units: str = "ALL",
        expected_sha256: Mapping[str, str] | None = None,
    ) -> None:
        self.packages = CoreMLPackages.in_dir(Path(model_dir))
        expected = dict(expected_sha256 or {})
        roles = self.packages.roles()
        for role in set(expected) - set(roles):
            verify_package(Path(model_dir) / PACKAGE_NAMES[role], role)  # raises: not found
        self.digests = {role: verify_package(path, role, expected.get(role)) for role, path in roles.items()}
        self.encoder_id: str = self.digests["encoder"]
        self.model_id: str = "litemedsam/coreml-fp16/" + "-".join(d[:12] for d in self.digests.values())
        self.has_tuned_decoder = "decoder_tuned" in self.digests
        ok, why = available()
        if not ok:
            raise CoreMLUnavailableError(why)
        self._models = {role: _load_mlmodel(path, compute_units) for role, path in self.packages.roles().items()}

    available = staticmethod(available)

    @classmethod
    def open(cls, models_dir: Path, compute_units: str = "ALL") -> CoreMLBackend:
        """The backend over `models_dir`, each package checked against the build manifest's digest.

        Raises ModelArtifactError when the manifest is missing or records no CoreML build.
        """
        from dermaseg.core.segment.artifacts import read_manifest

        info = read_manifest(Path(models_dir)).get("coreml") or {}
        packages = info.get("packages") if info.get("built") else None
        required = set(PACKAGE_NAMES) - OPTIONAL_ROLES
        if not isinstance(packages, dict) or not required <= set(packages) <= set(PACKAGE_NAMES):
            reason = info.get("reason", "not in the manifest")
            raise ModelArtifactError(f"no CoreML packages in {models_dir} ({reason}); build them with `{REBUILD}`")
        expected = {role: str(packages[role]["sha256"]) for role in packages}
        return cls(models_dir, compute_units=compute_units, expected_sha256=expected)

    def encode(self, x: np.ndarray) -> np.ndarray:
        """float32 (1, 3, 256, 256) preprocessed image (see core.preprocess) -> float32 (1, 256, 64, 64)."""
        out = self._models["encoder"].predict({ENCODER_INPUT: _array(x, _IMAGE_SHAPE, ENCODER_INPUT)})
        return _array(out[ENCODER_OUTPUT], _EMBEDDING_SHAPE, ENCODER_OUTPUT)

    def decode(self, inputs: DecoderInputs, tuned: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Run the prompt decoder; returns (low_res_logits (1, 4, 256, 256), iou_predictions (1, 4)) float32.
        `tuned`: the fine-tuned decoder answers (when built; else the bundled decoder does).

        Shapes as in `DecoderInputs`. Untuned, the box package runs for N == 2 with labels [2, 3], else the
        points one.
        """
        role = decoder_role(inputs.point_coords, inputs.point_labels, tuned=tuned and self.has_tuned_decoder)
        out = self._run(role, inputs)
        return out[0], out[1]

    def decode_features(self, inputs: DecoderInputs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The tuned decoder's `decode` and its mask features (1, 32, 256, 256) float32."""
        if not self.has_tuned_decoder:
            raise ModelArtifactError(f"no tuned decoder in this build: rebuild with `{REBUILD}`")
        role = decoder_role(inputs.point_coords, inputs.point_labels, tuned=True)
        logits, iou, out = self._run(role, inputs)
        return logits, iou, _array(out[MASK_FEATURES], FEATURES_SHAPE, MASK_FEATURES)

    def _run(self, role: str, inputs: DecoderInputs) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        n = np.asarray(inputs.point_coords).shape[1]
        shapes = (_EMBEDDING_SHAPE, (1, n, 2), (1, n), _MASK_SHAPE, (1,))
        feed = {
            name: _array(a, shape, name) for name, a, shape in zip(DECODER_INPUTS, inputs.arrays(), shapes, strict=True)
        }
        out = self._models[role].predict(feed)
        return (
            _array(out["low_res_logits"], _LOGITS_SHAPE, "low_res_logits"),
            _array(out["iou_predictions"], _IOU_SHAPE, "iou_predictions"),
            out,
        )


def artifacts_present(models_dir: Path) -> bool:
    """Whether the required package directories exist in `models_dir` (a cheap check: nothing is hashed)."""
    return all(p.is_dir() for p in CoreMLPackages.in_dir(Path(models_dir)).roles().values())


def verify_package(package: Path, role: str, expected_sha256: str | None = None) -> str:
    """Check one package and return its digest (`package_digest`); raise ModelArtifactError if unusable.

    The digest is compared with `expected_sha256` when given (e.g. from the build manifest); the spec
    is checked against the role's contract whenever coremltools is importable.
    """
    digest = package_digest(package)
    if expected_sha256 is not None and digest != expected_sha256:
        raise ModelArtifactError(
            f"{package}: checksum mismatch (expected {expected_sha256[:12]}…, found {digest[:12]}…); "
            f"rebuild with `{REBUILD}`"
        )
    try:
        import coremltools  # noqa: F401
    except ImportError:
        return digest
    load_checked_spec(package, role)
    return digest
