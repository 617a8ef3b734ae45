"""CoreML backend (Apple hardware): the LiteMedSAM encoder and prompt decoders as ML programs.

Same duck-typed interface as the ONNX backend: `name`, `model_id`, `encoder_id`, `encode`, `decode`.
Packages built by `dermaseg models build` (see `dermaseg.models.export_coreml`):

- `encoder-fp16.mlpackage`: image (1, 3, 256, 256) -> image_embeddings (1, 256, 64, 64).
- `decoder-box-fp16.mlpackage`: exactly 2 points labelled [2, 3] (a box).
- `decoder-points-fp16.mlpackage`: 1..16 points, any labels.
- `decoder-tuned-fp16.mlpackage` (optional: when the Python package ships fine-tuned decoder weights):
  the decoder fine-tuned for clicks, 1..66 points (a box and up to 64 clicks), answering every prompt.

All inputs and outputs are float32; weights and compute are fp16. The packages' names, digests and spec
checks are in `coreml_packages`. coremltools is imported lazily: it is needed to verify a package's spec
(any platform) and to run it (macOS 13+ only).
"""

from __future__ import annotations

import platform
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from dermaseg.core.errors import DermasegError, ModelArtifactError, PromptError
from dermaseg.core.segment.backends.coreml_packages import (
    ENCODER_INPUT,
    ENCODER_OUTPUT,
    IMAGE_SHAPE,
    IOU_SHAPE,
    LOGITS_SHAPE,
    MASK_SHAPE,
    MAX_POINTS,
    OPTIONAL_ROLES,
    PACKAGE_NAMES,
    REBUILD,
    TUNED_MAX_POINTS,
    CoreMLPackages,
    verify_package,
)
from dermaseg.core.segment.preprocess import (
    DECODER_INPUTS,
    EMBEDDING_SHAPE,
    FEATURES_SHAPE,
    MASK_FEATURES,
    DecoderInputs,
)

BOX_LABELS = (2.0, 3.0)  # top-left, bottom-right corner labels
MIN_MACOS = (13, 0)  # packages target macOS 13 / iOS 16 (ML program spec version 7)


class CoreMLUnavailableError(DermasegError):
    """CoreML cannot run on this machine (not macOS 13+, or coremltools missing); the message says why."""


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
        out = self._models["encoder"].predict({ENCODER_INPUT: _array(x, IMAGE_SHAPE, ENCODER_INPUT)})
        return _array(out[ENCODER_OUTPUT], EMBEDDING_SHAPE, ENCODER_OUTPUT)

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
        shapes = (EMBEDDING_SHAPE, (1, n, 2), (1, n), MASK_SHAPE, (1,))
        feed = {
            name: _array(a, shape, name) for name, a, shape in zip(DECODER_INPUTS, inputs.arrays(), shapes, strict=True)
        }
        out = self._models[role].predict(feed)
        return (
            _array(out["low_res_logits"], LOGITS_SHAPE, "low_res_logits"),
            _array(out["iou_predictions"], IOU_SHAPE, "iou_predictions"),
            out,
        )
