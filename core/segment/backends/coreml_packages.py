"""CoreML packages on disk: their names, a digest independent of where and when they were saved, the
check of a package's spec against the I/O contract, and the one conversion recipe that makes them.

coremltools is imported lazily: it is needed to check a package's spec (any platform), not to hash it.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from dermaseg.core.errors import ModelArtifactError
from dermaseg.core.segment.preprocess import EMBEDDING_SHAPE, FEATURES_SHAPE, MASK_FEATURES
from dermaseg.core.segment.prompts import MAX_POINTS as MAX_CLICKS

ENCODER_INPUT = "image"
ENCODER_OUTPUT = "image_embeddings"
MAX_POINTS = 16  # upper bound of the points decoder's RangeDim
TUNED_MAX_POINTS = 2 + MAX_CLICKS  # the tuned decoder gets a box and every click (`Refinement`)
REBUILD = "dermaseg models build"

PACKAGE_NAMES = {
    "encoder": "encoder-fp16.mlpackage",
    "decoder_box": "decoder-box-fp16.mlpackage",
    "decoder_points": "decoder-points-fp16.mlpackage",
    "decoder_tuned": "decoder-tuned-fp16.mlpackage",
}
OPTIONAL_ROLES = frozenset({"decoder_tuned"})  # built when fine-tuned decoder weights ship

IMAGE_SHAPE = (1, 3, 256, 256)
MASK_SHAPE = (1, 1, 256, 256)
LOGITS_SHAPE = (1, 4, 256, 256)
IOU_SHAPE = (1, 4)
_MANIFEST = "Manifest.json"
_DIGEST_VERSION = b"dermaseg-mlpackage-digest-v1\n"
_BLOB_HEADER = struct.Struct("<IIQQ")  # MIL weight blob metadata: sentinel, dtype, size, data offset
_BLOB_SENTINEL = 0xDEADBEEF


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
        return (TensorSpec(ENCODER_INPUT, f32, IMAGE_SHAPE),), (TensorSpec(ENCODER_OUTPUT, f32, EMBEDDING_SHAPE),)
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
        TensorSpec("image_embeddings", f32, EMBEDDING_SHAPE),
        TensorSpec("point_coords", f32, (1, n, 2), ranged((1, n, 2))),
        TensorSpec("point_labels", f32, (1, n), ranged((1, n))),
        TensorSpec("mask_input", f32, MASK_SHAPE),
        TensorSpec("has_mask_input", f32, (1,)),
    )
    outputs = (
        TensorSpec("low_res_logits", f32, LOGITS_SHAPE),
        TensorSpec("iou_predictions", f32, IOU_SHAPE),
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


def ml_program(source: Any, inputs: list, outputs: list[str]) -> Any:
    """`coremltools.convert` as every package is made: an ML program for macOS 13, fp16 compute, float32
    outputs named `outputs`. source: a traced torch module or a MIL program; inputs: `ct.TensorType`s."""
    import coremltools as ct

    return ct.convert(
        source,
        inputs=inputs,
        outputs=[ct.TensorType(name=n, dtype=np.float32) for n in outputs],
        convert_to="mlprogram",
        minimum_deployment_target=ct.target.macOS13,
        compute_precision=ct.precision.FLOAT16,
    )
