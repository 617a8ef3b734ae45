"""The brush and eraser: a stroke painted into (or erased from) the mask on the working grid, undoable."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from dermaseg.core.annotation.geometry import Polygons
from dermaseg.core.errors import DermasegError, GeometryError
from dermaseg.webui.page.masks import outline
from dermaseg.webui.page.undo import UndoStep, record

if TYPE_CHECKING:
    from dermaseg.webui.page.session import Session

MAX_PAINT_POINTS = 10_000  # points in one brush stroke (the canvas keeps them ~radius/2 apart)
MAX_BRUSH_RADIUS_PX = 2_000.0  # image px
MAX_PAINT_WORK_PX = 60_000_000  # pixel tests in one stroke (the sum of its segments' boxes): ~0.5 s


def paint(s: Session, points: Any, radius: float, erase: bool = False) -> None:
    """Paint (or erase) a brush stroke into the current mask; like an outline edit, it is undoable.

    points: the stroke's centre line, [[x, y], ...] in image pixels (1..MAX_PAINT_POINTS points);
    radius: the brush radius in image pixels. A pixel (row r, col c) is painted when its centre
    (c + 0.5, r + 0.5) lies within `radius` of the polyline (discs at the points, capsules between).
    Only the stroke's segments' bounding boxes are touched. The outline is re-derived from the mask.
    """
    image = s.require_image()
    pts = _stroke_points(points)
    try:
        r = float(radius)
    except (TypeError, ValueError):
        r = math.nan
    if not (math.isfinite(r) and 0 < r <= MAX_BRUSH_RADIUS_PX):
        raise GeometryError(
            f"the brush radius must be a number of pixels in (0, {MAX_BRUSH_RADIUS_PX:g}], got {radius!r}"
        )
    h, w = s.mask_shape()  # painted on the working grid, like every mask of the session
    pts, r = pts * (w / image.width, h / image.height), r * w / image.width
    if s.mask is None or not s.mask.any():
        if erase:
            raise DermasegError("nothing to erase: there is no outline yet")
        base = np.zeros((h, w), dtype=bool)
    else:
        base = s.mask
    segments = list(zip(pts[:-1], pts[1:], strict=True)) if len(pts) > 1 else [(pts[0], pts[0])]
    boxes = [_segment_box(a, b, r, w, h) for a, b in segments]
    work = sum((x1 - x0) * (y1 - y0) for x0, y0, x1, y1 in boxes)
    if work == 0:
        raise DermasegError("the brush stroke is outside the image")
    if work > MAX_PAINT_WORK_PX:
        raise DermasegError("this brush stroke is too large to paint at once: paint shorter strokes or zoom in")
    mask = base.copy()
    for (a, b), box in zip(segments, boxes, strict=True):
        _stamp_capsule(mask, a, b, r, box, not erase)
    if np.array_equal(mask, base):
        s.message = "the stroke changed nothing" + (" (it erased outside the outline)" if erase else "")
        return
    s.mask = mask
    s.polygons = outline(s, mask) if mask.any() else Polygons((), image.width, image.height)
    s.edited, s.metrics = True, None
    record(s, UndoStep(s.prompts, s.polygons, mask))  # undoable like a prompt; the exact painted mask
    area = int(mask.sum() * s.pixel_size**2)
    s.message = f"{'erased' if erase else 'painted'}: outline {area:,} px (edited by hand)"


def _stroke_points(points: Any) -> np.ndarray:
    """Validated stroke points: float64 (N, 2) of finite (x, y), 1 <= N <= MAX_PAINT_POINTS."""
    if not isinstance(points, (list, tuple)) or not points:
        raise GeometryError("a brush stroke needs at least one point [x, y]")
    if len(points) > MAX_PAINT_POINTS:
        raise GeometryError(f"a brush stroke has at most {MAX_PAINT_POINTS:,} points, got {len(points):,}")
    try:
        pts = np.array([[float(p[0]), float(p[1])] for p in points if len(p) == 2], dtype=np.float64)
    except (TypeError, ValueError, IndexError, OverflowError):
        raise GeometryError("a brush stroke's points must be [x, y] pairs of numbers") from None
    if len(pts) != len(points) or not np.isfinite(pts).all():
        raise GeometryError("a brush stroke's points must be [x, y] pairs of finite numbers")
    return pts


def _segment_box(a: np.ndarray, b: np.ndarray, r: float, w: int, h: int) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1): the pixels whose centres may lie within r of segment ab, clipped to the image."""
    x0 = math.floor(min(max(min(a[0], b[0]) - r, 0.0), w))
    x1 = math.ceil(min(max(max(a[0], b[0]) + r, 0.0), w))
    y0 = math.floor(min(max(min(a[1], b[1]) - r, 0.0), h))
    y1 = math.ceil(min(max(max(a[1], b[1]) + r, 0.0), h))
    return x0, y0, max(x0, x1), max(y0, y1)


def _stamp_capsule(
    mask: np.ndarray, a: np.ndarray, b: np.ndarray, r: float, box: tuple[int, int, int, int], value: bool
) -> None:
    """Set to `value` the pixels of `mask` (bool (H, W), in place) whose centres lie within r of segment ab."""
    x0, y0, x1, y1 = box
    if x1 <= x0 or y1 <= y0:
        return
    px = np.arange(x0, x1, dtype=np.float64)[None, :] + 0.5 - a[0]
    py = np.arange(y0, y1, dtype=np.float64)[:, None] + 0.5 - a[1]
    dx, dy = b[0] - a[0], b[1] - a[1]
    length2 = dx * dx + dy * dy
    t = np.clip((px * dx + py * dy) / length2, 0.0, 1.0) if length2 > 0 else 0.0
    inside = (px - t * dx) ** 2 + (py - t * dy) ** 2 <= r * r
    mask[y0:y1, x0:x1][inside] = value
