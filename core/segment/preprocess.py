"""The one preprocessing contract between an image and LiteMedSAM, used by export parity checks and
the runtime alike (upstream LiteMedSAM convention).

Encoder input: resize the longest side to 256 (area filter), min-max normalise the resized image to
[0, 1] per image (no mean/std), zero-pad bottom/right to 256x256, NCHW float32.
Prompts: pixel coordinates (x, y) scaled by the same factors as the image.
Output: low-res logits (256, 256) cropped to the resized extent and resized bilinearly to the image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

ENCODER_SIZE = 256  # model input side, px
EMBEDDING_SHAPE = (1, 256, 64, 64)
LOW_RES_SIZE = 256  # decoder logits side, px
NUM_HEADS = 4  # decoder mask heads; head 0 is the single-mask head Med-SAM was trained on
DECODER_INPUTS = ("image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input")
DECODER_OUTPUTS = ("low_res_logits", "iou_predictions")
# The tuned decoder's third output: the upscaled mask features the heads' logits are dot products of.
MASK_FEATURES = "mask_features"
TUNED_OUTPUTS = (*DECODER_OUTPUTS, MASK_FEATURES)  # the tuned decoder's outputs; the features feed `core.click_fit`
FEATURES_SHAPE = (1, 32, LOW_RES_SIZE, LOW_RES_SIZE)


@dataclass(frozen=True)
class Transform:
    """Geometry of one image's trip into the model: original (H, W) and resized (h, w) within 256x256."""

    height: int
    width: int

    @property
    def scale(self) -> float:
        return ENCODER_SIZE / max(self.height, self.width)

    @property
    def resized(self) -> tuple[int, int]:
        """(h, w) of the image inside the padded 256x256 input."""
        return (
            max(1, int(round(self.height * self.scale))),
            max(1, int(round(self.width * self.scale))),
        )

    def to_model(self, xy: np.ndarray) -> np.ndarray:
        """(N, 2) image pixel coordinates (x, y) -> model input coordinates, float32."""
        h, w = self.resized
        factors = np.array([w / self.width, h / self.height], dtype=np.float64)
        return (np.asarray(xy, dtype=np.float64) * factors).astype(np.float32)

    def to_image(self, xy: np.ndarray) -> np.ndarray:
        """Inverse of `to_model`."""
        h, w = self.resized
        factors = np.array([self.width / w, self.height / h], dtype=np.float64)
        return np.asarray(xy, dtype=np.float64) * factors


@dataclass(frozen=True, eq=False)
class DecoderInputs:
    """The prompt decoder's five inputs, float32, in `DECODER_INPUTS` order; every backend's `decode` takes them.

    embedding (1, 256, 64, 64); point_coords (1, N, 2) in model input pixels (x, y); point_labels (1, N):
    1 positive, 0 negative, 2/3 box corners, -1 padding; mask_input (1, 1, 256, 256) logits of an earlier
    answer; has_mask_input (1,): 1 when mask_input is to be used, else 0.
    """

    embedding: np.ndarray
    point_coords: np.ndarray
    point_labels: np.ndarray
    mask_input: np.ndarray
    has_mask_input: np.ndarray

    @classmethod
    def of(
        cls,
        embedding: np.ndarray,
        point_coords: np.ndarray,
        point_labels: np.ndarray,
        mask_input: np.ndarray | None = None,
    ) -> DecoderInputs:
        """Points with `mask_input` (256, 256) logits of an earlier answer, or with no mask input."""
        if mask_input is None:
            return cls(
                embedding,
                point_coords,
                point_labels,
                np.zeros((1, 1, LOW_RES_SIZE, LOW_RES_SIZE), np.float32),
                np.zeros(1, np.float32),
            )
        mask = np.asarray(mask_input, dtype=np.float32)[None, None]
        return cls(embedding, point_coords, point_labels, mask, np.ones(1, np.float32))

    def arrays(self) -> tuple[np.ndarray, ...]:
        """The five arrays in `DECODER_INPUTS` order."""
        return (self.embedding, self.point_coords, self.point_labels, self.mask_input, self.has_mask_input)

    def feed(self) -> dict[str, np.ndarray]:
        """The inputs by graph input name."""
        return dict(zip(DECODER_INPUTS, self.arrays(), strict=True))


def encoder_input(rgb: np.ndarray) -> tuple[np.ndarray, Transform]:
    """uint8 (H, W, 3) -> float32 (1, 3, 256, 256) in [0, 1], and the transform that maps prompts."""
    t = Transform(int(rgb.shape[0]), int(rgb.shape[1]))
    h, w = t.resized
    img = Image.fromarray(np.ascontiguousarray(rgb))
    shrinking = h <= t.height
    resized = np.asarray(img.resize((w, h), Image.Resampling.BOX if shrinking else Image.Resampling.BICUBIC))
    x = resized.astype(np.float32)
    lo, hi = float(x.min()), float(x.max())
    x = (x - lo) / max(hi - lo, 1e-8)
    out = np.zeros((1, 3, ENCODER_SIZE, ENCODER_SIZE), dtype=np.float32)
    out[0, :, :h, :w] = x.transpose(2, 0, 1)
    return out, t


def upscale_logits(low_res: np.ndarray, t: Transform, shape: tuple[int, int] | None = None) -> np.ndarray:
    """(256, 256) low-res logits -> float32 logits at image resolution, or at `shape` (h, w) (a smaller grid
    over the same image, for work whose cost must not grow with the image's pixels); bilinear, pixel centres."""
    h, w = t.resized
    out_h, out_w = shape if shape is not None else (t.height, t.width)
    crop = np.ascontiguousarray(low_res[:h, :w], dtype=np.float32)
    return np.asarray(Image.fromarray(crop, mode="F").resize((out_w, out_h), Image.Resampling.BILINEAR))


def mask_from_logits(low_res: np.ndarray, t: Transform, shape: tuple[int, int] | None = None) -> np.ndarray:
    """(256, 256) low-res logits -> bool mask at image resolution (or at `shape`), threshold at logit 0."""
    return upscale_logits(low_res, t, shape) > 0.0
