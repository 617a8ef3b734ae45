"""One settings object: CLI flags and environment variables map onto it, nothing else reads os.environ."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

ENV_PREFIX = "DERMASEG_"


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "dermaseg"


@dataclass(frozen=True)
class Settings:
    """Runtime configuration.

    cache_dir: root of built model artifacts (`models/`) and the embedding disk store (`embeddings/`).
    variant: model variant id of the default ONNX pair (see `dermaseg.core.segment.artifacts.VARIANTS`).
    backend: "onnx", "coreml", "openvino" or "auto" (CoreML on macOS when its artifacts exist; OpenVINO on
        x86-64 Linux/Windows when installed and its default encoder can run, see
        `backend_openvino.preferred`; else ONNX Runtime).
    openvino_encoder: the OpenVINO backend's encoder, "auto" (`backend_openvino.DEFAULT_ENCODER` when built),
        "int8" (NNCF-quantised) or "fp32" (the variant's ONNX encoder).
    openvino_precision: its inference precision, "auto" (bf16 where the CPU has it, else f32), "bf16", "f32".
    tuned_decoder: the tuned prompt decoder's precision, "auto" (`artifacts.DEFAULT_TUNED` where built), "int8"
        (its products over the image tokens in int8, `export_onnx.quantize_int8`) or "float" (the variant's own).
    threads: intra-op threads for ONNX Runtime and OpenVINO.
    blas_threads: threads of numpy's / SciPy's BLAS pools (`core.threads`; 1: they leave the cores to the runtime).
    max_pixels: largest accepted image, in pixels (width x height).
    memory_cache_bytes: bound of the in-memory embedding LRU, in bytes (one embedding is 4 MiB).
    """

    cache_dir: Path = field(default_factory=_default_cache_dir)
    variant: str = "default"
    backend: str = "auto"
    openvino_encoder: str = "auto"
    openvino_precision: str = "auto"
    tuned_decoder: str = "auto"
    threads: int = 2
    blas_threads: int = 1
    max_pixels: int = 50_000_000
    memory_cache_bytes: int = 256 * 1024 * 1024

    @property
    def models_dir(self) -> Path:
        return self.cache_dir / "models"

    @property
    def embeddings_dir(self) -> Path:
        return self.cache_dir / "embeddings"

    @property
    def images_dir(self) -> Path:
        """Image files of shared projects fetched from the database (`<sha256><suffix>`)."""
        return self.cache_dir / "images"

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: object) -> Settings:
        """Settings from `DERMASEG_*` environment variables, then explicit overrides (None ignored)."""
        env = dict(os.environ if env is None else env)
        values: dict[str, object] = {}
        if v := env.get(ENV_PREFIX + "CACHE_DIR"):
            values["cache_dir"] = Path(v)
        for name in ("variant", "backend", "openvino_encoder", "openvino_precision", "tuned_decoder"):
            if v := env.get(ENV_PREFIX + name.upper()):
                values[name] = v
        for name in ("threads", "blas_threads", "max_pixels", "memory_cache_bytes"):
            if v := env.get(ENV_PREFIX + name.upper()):
                values[name] = int(v)
        values.update({k: v for k, v in overrides.items() if v is not None})
        if "cache_dir" in values:
            values["cache_dir"] = Path(values["cache_dir"])  # type: ignore[arg-type]
        return replace(cls(), **values)  # type: ignore[arg-type]
