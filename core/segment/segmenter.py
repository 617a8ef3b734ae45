"""Segment a lesion from prompts: `Engine` (models + embedding cache, shared) and `Segmenter` (one user).

Like segment-anything's SamPredictor: `set_image` does the expensive work once (or finds it in the
cache); `predict` re-runs only the light prompt decoder.
"""

from __future__ import annotations

import functools
import platform
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal, Protocol

import numpy as np

from dermaseg.core.errors import DermasegError, PromptError
from dermaseg.core.image import LesionImage
from dermaseg.core.segment.artifacts import resolve_variant
from dermaseg.core.segment.embedding_cache import CacheKey, EmbeddingCache, Source
from dermaseg.core.segment.preprocess import (
    LOW_RES_SIZE,
    NUM_HEADS,
    DecoderInputs,
    Transform,
    encoder_input,
    mask_from_logits,
)
from dermaseg.core.segment.prompts import Prompts
from dermaseg.core.settings import Settings
from dermaseg.core.threads import limit_malloc_arenas, limit_numeric_threads

BOX_CORNER_LABELS = (2.0, 3.0)
Decoder = Literal["auto", "base"]
PAD_LABEL = -1.0


class Backend(Protocol):
    """What the segmenter needs from a runtime (ONNX Runtime or CoreML); shapes as in OnnxBackend."""

    name: str
    model_id: str
    encoder_id: str
    has_tuned_decoder: bool

    def encode(self, x: np.ndarray) -> np.ndarray: ...

    def decode(self, inputs: DecoderInputs, tuned: bool = False) -> tuple[np.ndarray, np.ndarray]: ...

    def decode_features(self, inputs: DecoderInputs) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...


@dataclass(frozen=True, eq=False)
class MaskResult:
    """A predicted mask and what it was made from.

    low_res_logits: float32 (256, 256), usable as the next `mask_input`. score: the decoder's predicted
    IoU of the chosen head; head_scores: all four. image_size: (H, W) of the image, px.
    features: float32 (32, 256, 256), the decoder's mask features (`Segmenter.predict(features=True)`).
    mask: bool (H, W), the logits thresholded at 0 at image resolution, made when first read (a click's
    intermediate answers are never upscaled); or the mask a later step set with `with_mask` (edits,
    tidying), which may be on a smaller grid over the same image (`InteractiveSession.predict(shape=...)`).
    """

    low_res_logits: np.ndarray
    score: float
    head: int
    head_scores: tuple[float, ...]
    prompts: Prompts
    model_id: str
    image_sha256: str
    image_size: tuple[int, int]
    features: np.ndarray | None = None

    @property
    def transform(self) -> Transform:
        return Transform(*self.image_size)

    @property
    def mask(self) -> np.ndarray:
        mask = self.__dict__.get("_mask")
        if mask is None:  # two threads may both make it: the same array, no harm
            mask = mask_from_logits(self.low_res_logits, self.transform)
            self.__dict__["_mask"] = mask
        return mask

    def at(self, shape: tuple[int, int] | None) -> MaskResult:
        """This result with its mask made from the logits at `shape` (h, w), a grid over the same image
        (None: at image resolution, when first read)."""
        if shape is None:
            return replace(self)
        return self.with_mask(mask_from_logits(self.low_res_logits, self.transform, shape))

    def with_mask(self, mask: np.ndarray) -> MaskResult:
        """This result with `mask` instead of the logits' own (same logits, prompts and provenance)."""
        out = replace(self)
        out.__dict__["_mask"] = mask
        return out


class Engine:
    """A backend and an embedding cache, shared by every user of one process. Thread-safe."""

    def __init__(self, backend: Backend, cache: EmbeddingCache) -> None:
        self.backend = backend
        self.cache = cache

    @classmethod
    def open(cls, settings: Settings | None = None) -> Engine:
        """Load the configured variant (checksums verified) and the embedding cache under cache_dir; hold
        the process's BLAS pools to `settings.blas_threads` and its malloc arenas (`core.threads`)."""
        settings = settings or Settings.from_env()
        limit_numeric_threads(settings.blas_threads)
        limit_malloc_arenas()
        backend = _open_backend(settings)
        cache = EmbeddingCache(settings.embeddings_dir, settings.memory_cache_bytes)
        return cls(backend, cache)

    @property
    def model_id(self) -> str:
        return self.backend.model_id

    def key(self, image: LesionImage) -> CacheKey:
        return CacheKey(image.sha256, self.backend.encoder_id)

    def embedding(self, image: LesionImage, frame: Callable[[], np.ndarray] | None = None) -> tuple[np.ndarray, Source]:
        """float32 (1, 256, 64, 64) for `image`, from memory, disk or the encoder; `frame`: gives the image's
        encoder input (`preprocess.encoder_input`) when the caller keeps it for other uses."""
        make = frame or (lambda: encoder_input(image.rgb)[0])
        return self.cache.get_or_compute(self.key(image), lambda: self.backend.encode(make()))

    def segmenter(self) -> Segmenter:
        return Segmenter(self)


class Segmenter:
    """One user's current image and its embedding; cheap to create, one per session."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.image: LesionImage | None = None
        self._embedding: np.ndarray | None = None
        self._transform: Transform | None = None
        self._frame: Callable[[], np.ndarray] | None = None

    @property
    def has_tuned_decoder(self) -> bool:
        """Whether the model variant ships a decoder fine-tuned for clicks (`dermaseg models train-clicks`)."""
        return self.engine.backend.has_tuned_decoder

    @classmethod
    def open(cls, settings: Settings | None = None) -> Segmenter:
        return Engine.open(settings).segmenter()

    def set_image(self, image: LesionImage) -> Source:
        """Make `image` current; returns where its embedding came from (memory, disk, computed)."""
        # made once per image, when first asked for: the encoder and the click fit read the same
        frame = functools.cache(lambda: encoder_input(image.rgb)[0])
        emb, source = self.engine.embedding(image, frame)
        self.image, self._embedding, self._frame = image, emb, frame
        self._transform = Transform(image.height, image.width)
        return source

    def encoder_frame(self) -> np.ndarray:
        """float32 (1, 3, 256, 256): the current image as the encoder sees it (`preprocess.encoder_input`),
        made once per image (~55 ms for a 12-megapixel photo)."""
        if self._frame is None:
            raise DermasegError("open an image before prompting")
        return self._frame()

    def predict(
        self,
        prompts: Prompts,
        *,
        mask_input: np.ndarray | None = None,
        head: int | Literal["best"] = 0,
        decoder: Decoder = "auto",
        features: bool = False,
    ) -> MaskResult:
        """Mask for `prompts` on the current image.

        mask_input: previous `low_res_logits` (256, 256) to refine, or None.
        head: 0 (the single-mask head Med-SAM was trained on), 1-3, or "best" (highest predicted IoU).
        decoder: "auto" is the variant's fine-tuned decoder when it has one, else the bundled one;
            "base" is always the bundled (box-trained) decoder.
        features: also return the fine-tuned decoder's mask features (`core.click_fit`); DermasegError
            when the variant has no fine-tuned decoder or `decoder` is "base".
        """
        return self._results(prompts, mask_input, None if head == "best" else (head,), decoder, features)[0]

    def candidates(
        self, prompts: Prompts, *, mask_input: np.ndarray | None = None, decoder: Decoder = "auto"
    ) -> tuple[MaskResult, ...]:
        """One result per decoder head (0-3), in head order."""
        return self._results(prompts, mask_input, tuple(range(NUM_HEADS)), decoder)

    def _results(
        self,
        prompts: Prompts,
        mask_input: np.ndarray | None,
        heads: tuple[int, ...] | None,
        decoder: Decoder,
        features: bool = False,
    ) -> tuple[MaskResult, ...]:
        if self.image is None or self._embedding is None or self._transform is None:
            raise DermasegError("open an image before prompting")
        if heads is not None and any(h not in range(NUM_HEADS) for h in heads):
            raise PromptError(f"head must be 0..{NUM_HEADS - 1} or 'best', got {heads}")
        prompts = prompts.validated(self.image.width, self.image.height)
        coords, labels = decoder_points(prompts, self._transform)
        if mask_input is not None and np.shape(mask_input) != (LOW_RES_SIZE, LOW_RES_SIZE):
            raise PromptError(f"mask_input must be (256, 256) logits, got {np.shape(mask_input)}")
        inputs = DecoderInputs.of(self._embedding, coords, labels, mask_input)
        if decoder not in ("auto", "base"):
            raise PromptError(f"decoder must be 'auto' or 'base', got {decoder!r}")
        tuned = decoder == "auto" and self.has_tuned_decoder
        feats = None
        if features:
            if not tuned:
                raise DermasegError("mask features come from the fine-tuned decoder, and this prompt does not use one")
            logits, iou, feats = self.engine.backend.decode_features(inputs)
        else:
            logits, iou = self.engine.backend.decode(inputs, tuned=tuned)
        scores = tuple(float(s) for s in iou[0])
        if heads is None:
            heads = (int(np.argmax(scores)),)
        return tuple(
            MaskResult(
                low_res_logits=logits[0, h].copy(),
                score=scores[h],
                head=h,
                head_scores=scores,
                prompts=prompts,
                model_id=self.engine.model_id,
                image_sha256=self.image.sha256,
                image_size=(self.image.height, self.image.width),
                features=None if feats is None else feats[0],
            )
            for h in heads
        )


def decoder_points(prompts: Prompts, t: Transform) -> tuple[np.ndarray, np.ndarray]:
    """Prompts in image pixels -> decoder point_coords (1, N, 2) and point_labels (1, N), float32.

    Clicks first, then the two box corners (labels 2, 3), as SAM's prompt encoder orders them. Without
    a box SAM appends one padding point (label -1); nothing else is padded (extra padding points hurt).
    """
    xy = [list(p) for p in prompts.points]
    labels = [float(v) for v in prompts.labels]
    if prompts.box is not None:
        x0, y0, x1, y1 = prompts.box
        xy += [[x0, y0], [x1, y1]]
        labels += list(BOX_CORNER_LABELS)
    coords = t.to_model(np.array(xy, dtype=np.float64).reshape(-1, 2))
    if prompts.box is None:
        coords = np.vstack([coords, np.zeros((1, 2), np.float32)])
        labels.append(PAD_LABEL)
    return coords[None].astype(np.float32), np.array([labels], dtype=np.float32)


def _open_backend(settings: Settings) -> Backend:
    choice = settings.backend
    if choice not in ("auto", "onnx", "coreml", "openvino"):
        raise DermasegError(f"unknown backend {choice!r}: use auto, onnx, coreml or openvino")
    if choice == "coreml" or (choice == "auto" and platform.system() == "Darwin"):
        from dermaseg.core.segment.backends import coreml as backend_coreml
        from dermaseg.core.segment.backends import coreml_packages

        ok, why = backend_coreml.available()
        if ok and (choice == "coreml" or coreml_packages.artifacts_present(settings.models_dir)):
            return backend_coreml.CoreMLBackend.open(settings.models_dir)
        if choice == "coreml":
            raise DermasegError(f"the CoreML backend cannot run here: {why}")
    if choice == "openvino" or (choice == "auto" and platform.system() in ("Linux", "Windows")):
        from dermaseg.core.segment.backends import openvino as backend_openvino

        ok, why = backend_openvino.available()
        if choice == "openvino" and not ok:
            raise DermasegError(f"the OpenVINO backend cannot run here: {why}")
        if ok and (choice == "openvino" or backend_openvino.preferred(settings)):
            return backend_openvino.OpenVinoBackend.open(settings)
    from dermaseg.core.segment.backends.onnx_runtime import OnnxBackend

    files = resolve_variant(settings.models_dir, settings.variant, tuned=settings.tuned_decoder)
    return OnnxBackend(files, settings.threads)
