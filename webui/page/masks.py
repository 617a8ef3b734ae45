"""The tab's current mask on the working grid: the model's for the prompts, its outline, its full-size copy.

A prompt's cost depends on the working grid (`Session.mask_shape()`), not on the image's pixels; the
outline is in image pixels, and the mask is made at image resolution once, when it is saved.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from dermaseg.core.annotation.geometry import Polygons, mask_to_polygons, polygons_to_mask
from dermaseg.core.errors import DermasegError
from dermaseg.core.segment.prompts import Prompts
from dermaseg.core.segment.segmenter import MaskResult

if TYPE_CHECKING:
    from dermaseg.webui.page.session import Session


def predict(s: Session, prompts: Prompts) -> None:
    """Make the model's mask for `prompts` current (no mask for no prompts), with its outline and message.
    Where the page takes previews (`Session.preview_to`) and the prompts have a cheaper answer to show first
    (`InteractiveSession.preview`: a click without a box), that answer is made current and sent first."""
    if prompts.is_empty:
        s.result = s.mask = s.polygons = s.metrics = None
        s.edited = False
        s.message = "Draw a box around the lesion, or click on it."
        return
    if s.preview_to is not None and (preview := s.clicks.preview(prompts, s.mask_shape())) is not None:
        _make_current(s, preview)
        s.preview_to()
    _make_current(s, s.clicks.predict(prompts, s.mask_shape(), head=s.head))


def _make_current(s: Session, r: MaskResult) -> None:
    """`r` as the session's mask, with its outline and message."""
    s.result, s.mask, s.edited, s.metrics = r, r.mask, False, None
    s.polygons = outline(s, r.mask) if r.mask.any() else None
    n = int(r.mask.sum())
    s.message = (
        f"mask: {n:,} px, predicted IoU {r.score:.2f} (head {r.head})"
        if n
        else "the model found no lesion for these prompts: draw a box around it"
    )


def on_grid(s: Session, full: np.ndarray) -> np.ndarray:
    """A bool mask at image resolution on the session's working grid (itself when the grid is the image):
    a grid pixel is in when at least half of the image pixels it covers are."""
    h, w = s.mask_shape()
    if full.shape == (h, w):
        return full
    small = Image.fromarray(full.astype(np.uint8) * 255).resize((w, h), Image.Resampling.BOX)
    return np.asarray(small) >= 128


def on_grid_rgb(rgb: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """uint8 (H, W, 3) -> the same on a (h, w) grid (area average, as the encoder shrinks); itself when equal."""
    h, w = shape
    if rgb.shape[:2] == (h, w):
        return rgb
    return np.asarray(Image.fromarray(rgb).resize((w, h), Image.Resampling.BOX))


def outline(s: Session, mask: np.ndarray) -> Polygons:
    """The editable outline of a working-grid mask, in image pixels (simplified at `tolerance_px` grid px)."""
    image = s.require_image()
    return mask_to_polygons(mask, s.tolerance_px).scaled_to(image.width, image.height)


def rasterised(s: Session, polygons: Polygons) -> np.ndarray:
    """An outline in image pixels as a mask on the working grid."""
    h, w = s.mask_shape()
    return polygons_to_mask(polygons.scaled_to(w, h), h, w)


def full_mask(s: Session) -> np.ndarray:
    """The current mask at image resolution, made once per mask (to save it). Where the grid is smaller
    than the image: the model's mask by the same steps at full resolution (the decoder's answers are
    cached, so no model runs: pixel-identical to a session working at full resolution), or the edited
    outline rasterised at full resolution."""
    image = s.require_image()
    if s.mask is None:
        raise DermasegError("nothing to save: draw a box or click on the lesion first")
    if s.mask.shape == (image.height, image.width):
        return s.mask
    if s.full is None or s.full[0] is not s.mask:
        if s.edited or s.result is None:
            assert s.polygons is not None  # every non-empty mask has its outline
            full = polygons_to_mask(s.polygons, image.height, image.width)
        else:
            full = s.clicks.predict(s.prompts, head=s.head).mask
        s.full = (s.mask, full)
    return s.full[1]


def vertex_count(polys: Polygons) -> int:
    """Vertices of every ring of every part."""
    return sum(len(p.exterior) + sum(len(h) for h in p.holes) for p in polys.parts)
