"""Hand edits of the outline: an edited outline from the canvas, and its simplification tolerance."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from dermaseg.core.annotation.geometry import Polygons, repair_polygons
from dermaseg.core.errors import GeometryError
from dermaseg.webui.page.masks import outline, rasterised, vertex_count
from dermaseg.webui.page.undo import UndoStep, keep_draft, record

if TYPE_CHECKING:
    from dermaseg.webui.page.session import Session

MAX_EDIT_VERTICES = 20_000  # of one edited outline (see undo.MAX_HISTORY_VERTICES)


def edit_polygons(s: Session, data: dict[str, Any]) -> tuple[str, ...]:
    """Take an edited outline from the page: repaired, it becomes the mask. Returns repair warnings."""
    image = s.require_image()
    polys = Polygons.from_json(data)
    if (n := vertex_count(polys)) > MAX_EDIT_VERTICES:
        raise GeometryError(
            f"an edited outline may have at most {MAX_EDIT_VERTICES:,} vertices, this one has {n:,}: "
            "simplify it (a larger tolerance) before editing"
        )
    require_size(polys, image.width, image.height, "; reload the page")
    repaired = repair_polygons(polys)
    s.polygons = repaired.polygons
    s.mask = rasterised(s, repaired.polygons)
    s.edited, s.metrics = True, None
    record(s, UndoStep(s.prompts, repaired.polygons))  # undoable like a prompt
    s.message = f"outline edited: {int(s.mask.sum() * s.pixel_size**2):,} px" + (
        f" ({len(repaired.warnings)} repair(s))" if repaired.warnings else ""
    )
    return repaired.warnings


def require_size(outline: Polygons, width: int, height: int, hint: str = "") -> None:
    """GeometryError unless `outline` (from the page, or a draft) is for an image of `width` x `height` px."""
    if (outline.width, outline.height) != (width, height):
        raise GeometryError(
            f"the outline is for a {outline.width}×{outline.height} image, the open image is {width}×{height}{hint}"
        )


def set_tolerance(s: Session, tolerance_px: float) -> None:
    """Re-derive the editable outline from the current mask with a new simplification tolerance."""
    if not (math.isfinite(tolerance_px) and tolerance_px >= 0):
        raise GeometryError(f"the tolerance must be a number of pixels >= 0, got {tolerance_px!r}")
    s.tolerance_px = float(tolerance_px)
    if s.mask is not None and s.mask.any():
        s.polygons = outline(s, s.mask)
        if s.edited:  # the edit is baked into the mask; keep mask and outline in agreement
            s.mask = rasterised(s, s.polygons)
            s.undo.edits[-1] = UndoStep(s.prompts, s.polygons)
            keep_draft(s)
        s.message = f"outline simplified at {s.tolerance_px:g} px: {vertex_count(s.polygons)} vertices"
