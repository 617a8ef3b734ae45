"""OpenVINO backend (x86 CPUs): the image encoder on OpenVINO, the prompt decoders on ONNX Runtime.

Reads the same artifacts as the ONNX backend, plus the NNCF int8 encoder (`encoder-int8-ov.xml/.bin`,
made by `dermaseg models build --parity-data DIR`). The encoder runs in bfloat16 where the CPU has it
(AVX512-BF16 / AMX), else float32. The decoders stay on ONNX Runtime, the tuned one with its products over
the image in int8 by default (`Settings.tuned_decoder`): ~21 ms a run. On OpenVINO the float tuned decoder
took 34-40 ms in bf16 and 44-49 ms in f32 against ORT's 29-34 ms (this 2-core Zen 4, the point count
changing from run to run as clicks come, which OpenVINO's dynamic shapes pay for), and bf16 moved its
logits by up to 0.14; ORT keeps the decoder's answers identical to the ONNX backend's.

OpenVINO's Python package sends usage statistics on import unless told otherwise: `core.offline` blocks
that before any module of `dermaseg.core` loads.
"""

from __future__ import annotations

import hashlib
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from dermaseg.core.errors import DermasegError, ModelArtifactError
from dermaseg.core.segment.artifacts import REBUILD_HINT, VariantFiles, openvino_int8_encoder, resolve_variant
from dermaseg.core.segment.backends.onnx_runtime import OnnxBackend
from dermaseg.core.settings import Settings

Precision = Literal["bf16", "f32"]
EncoderKind = Literal["int8", "fp32"]

# The encoder variant `auto` runs: decided by the accuracy gate of issue 18 (dev set, box Dice and clicks
# NoC@90 within 0.003 / 0.1 of ORT fp32); see the README's "Runtimes" section for the figures.
DEFAULT_ENCODER: EncoderKind = "int8"


def import_openvino():  # noqa: ANN201 - the openvino module
    """`openvino` without its model converter; DermasegError when the package is not installed.

    Its telemetry is off already (`core.offline`, run when `dermaseg.core` is imported). `import openvino`
    also imports the converter (`openvino.tools.ovc`), which the runtime never needs: marked absent, it is
    skipped (`openvino/__init__` guards that import), for less import time and memory.
    """
    sys.modules.setdefault("openvino.tools.ovc", None)  # type: ignore[arg-type]  # None: "import fails"
    try:
        import openvino
    except ImportError as e:
        raise DermasegError(f"the OpenVINO backend needs the `openvino` package ({e})") from None
    return openvino


def available() -> tuple[bool, str]:
    """(True, "") when OpenVINO can run here, else (False, why): x86-64 CPU and the package installed."""
    import importlib.util
    import platform

    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False, f"OpenVINO is used on x86-64 CPUs only (this is {platform.machine()})"
    if importlib.util.find_spec("openvino") is None:
        return False, "the `openvino` package is not installed"
    return True, ""


def choose_encoder(settings: Settings, files: VariantFiles) -> EncoderChoice:
    """The encoder file and precision `settings` ask for (their "auto" resolved on this machine)."""
    encoder, precision = settings.openvino_encoder, settings.openvino_precision
    if encoder not in ("auto", "int8", "fp32"):
        raise DermasegError(f"unknown OpenVINO encoder {encoder!r}: use auto, int8 or fp32")
    if precision not in ("auto", "bf16", "f32"):
        raise DermasegError(f"unknown OpenVINO precision {precision!r}: use auto, bf16 or f32")
    int8 = openvino_int8_encoder(settings.models_dir)
    kind: EncoderKind = DEFAULT_ENCODER if encoder == "auto" else encoder  # type: ignore[assignment]
    if kind == "int8" and int8 is None:
        if encoder == "int8":
            raise ModelArtifactError(
                f"no OpenVINO int8 encoder in {settings.models_dir}: run `dermaseg models build --parity-data DIR`"
            )
        kind = "fp32"
    if precision == "auto":
        precision = best_precision(import_openvino().Core())
    path, sha = int8 if kind == "int8" and int8 is not None else (files.encoder, files.encoder_sha256)
    return EncoderChoice(kind, path, sha, precision)  # type: ignore[arg-type]


def preferred(settings: Settings) -> bool:
    """Whether `auto` should run OpenVINO rather than ONNX Runtime here: only when it is faster, i.e. its
    encoder is the int8 one (built), or runs in bf16 on a CPU that has it. Measured on a 2-core Zen 4:
    int8 + bf16 0.43x, fp32 + bf16 0.55x, fp32 + f32 0.98x the time of ORT fp32 (decoders on ORT alike)."""
    if settings.variant not in ("default", "fp32"):
        return False  # the OpenVINO encoders are made from, and measured against, the fp32 variant
    try:
        choice = choose_encoder(settings, resolve_variant(settings.models_dir, settings.variant, verify=False))
    except DermasegError:
        return False
    return choice.kind == "int8" or choice.precision == "bf16"


def best_precision(core) -> Precision:  # noqa: ANN001 - openvino.Core
    """bf16 when the CPU computes in bfloat16 natively (OpenVINO lists BF16 among its capabilities)."""
    return "bf16" if "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES") else "f32"


@dataclass(frozen=True)
class EncoderChoice:
    """Which encoder file OpenVINO runs and in which inference precision.

    kind: "int8" (the NNCF-quantised IR) or "fp32" (the variant's float32 ONNX encoder).
    path: the .xml (int8) or .onnx (fp32) file; sha256: that file's checksum (the IR's .xml and .bin
    together for int8); precision: OpenVINO's INFERENCE_PRECISION_HINT for the float parts.
    """

    kind: EncoderKind
    path: Path
    sha256: str
    precision: Precision

    @property
    def encoder_id(self) -> str:
        """The embedding cache key: embeddings of another file or precision never mix (hex, 64 chars)."""
        return hashlib.sha256(f"openvino/{self.kind}/{self.precision}/{self.sha256}".encode()).hexdigest()


RELEASE_AFTER_IDLE_S = 2.0  # the encoder's working memory goes back after this long without an encode


class OpenVinoBackend:
    """The encoder on OpenVINO (one compiled model, one request at a time), the decoders on ONNX Runtime.

    encode: float32 (1, 3, 256, 256) -> float32 (1, 256, 64, 64); decode / decode_features: as
    `OnnxBackend` (they are its methods). Thread-safe.
    """

    name = "openvino"

    def __init__(
        self, files: VariantFiles, encoder: EncoderChoice, threads: int = 2, compiled_dir: Path | None = None
    ) -> None:
        """compiled_dir: where OpenVINO keeps the compiled encoder between runs (None: compile every time)."""
        ov = import_openvino()
        self.files = files
        self.encoder = encoder
        core = ov.Core()
        config = {
            "INFERENCE_NUM_THREADS": threads,
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": encoder.precision,
        }
        if compiled_dir is not None:
            # OpenVINO's own cache of the compiled encoder (~28 MB per file and precision, keyed by model, device
            # and config): int8 bf16 compiled in 0.9 s, read back in 0.3 s (2 cores, quiet; 5-30x that under load).
            config["CACHE_DIR"] = str(compiled_dir)
        try:
            # From the path (not a read ov.Model): only then does OpenVINO's cache skip reading and compiling.
            self._compiled = core.compile_model(str(encoder.path), "CPU", config)
        except Exception as e:  # noqa: BLE001 - OpenVINO raises RuntimeError subclasses of its own
            raise ModelArtifactError(f"{encoder.path} cannot be loaded by OpenVINO ({e}): {REBUILD_HINT}") from None
        self._request = self._compiled.create_infer_request()
        # One encode already uses every core; queueing keeps one set of activations (as OnnxBackend does).
        self._encoder_lock = threading.Lock()
        self._idle_release: threading.Timer | None = None
        self._decoders = OnnxBackend(files, threads, encoder=False)
        self.model_id = f"{files.model_id}/openvino-{encoder.kind}-{encoder.precision}"
        self.encoder_id = encoder.encoder_id
        self.decode = self._decoders.decode
        self.decode_features = self._decoders.decode_features

    @classmethod
    def open(cls, settings: Settings) -> OpenVinoBackend:
        """The backend for `settings`' variant, encoder and precision (see `Settings`); ModelArtifactError
        when the int8 encoder is asked for and not built, DermasegError for an unknown choice."""
        files = resolve_variant(settings.models_dir, settings.variant, tuned=settings.tuned_decoder)
        return cls(files, choose_encoder(settings, files), settings.threads, settings.cache_dir / "openvino")

    @property
    def has_tuned_decoder(self) -> bool:
        return self._decoders.has_tuned_decoder

    def encode(self, x: np.ndarray) -> np.ndarray:
        with self._encoder_lock:
            if self._idle_release is not None:
                self._idle_release.cancel()
            self._request.infer({0: np.ascontiguousarray(x, dtype=np.float32)})
            embedding = self._request.get_output_tensor(0).data.copy()
            # The encoder's intermediate tensors (~85 MiB in bf16) go back to the system once the encoder has
            # been idle for a moment, rather than staying for the process's life (issue 18, memory). Not after
            # every encode: mapping them again made each encode ~40 ms slower (p50 226-236 -> 264-289 ms, A/B in
            # one session), and an opened image brings a run of encodes (its mirror, the next images').
            self._idle_release = threading.Timer(RELEASE_AFTER_IDLE_S, self._release_if_idle)
            self._idle_release.daemon = True
            self._idle_release.start()
            return embedding

    def _release_if_idle(self) -> None:
        if self._encoder_lock.acquire(blocking=False):  # an encode running now will schedule its own release
            try:
                self._compiled.release_memory()
            finally:
                self._encoder_lock.release()
