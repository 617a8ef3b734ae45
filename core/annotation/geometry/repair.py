"""Validation and repair of the polygons a user edits: a valid outline plus a sentence per change.

`repair_polygons(polys)` checks an edit and returns a valid version plus human-readable warnings for
anything it changed; what cannot be repaired raises `GeometryError` naming the part.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely
from shapely.errors import GEOSException
from shapely.geometry import Polygon as ShapelyPolygon
from shapely.validation import explain_validity

from dermaseg.core.annotation.geometry.polygons import Polygon, Polygons, from_shapely, polygonal_parts
from dermaseg.core.errors import GeometryError

# Larger image sides are typos or attacks (and overflow GEOS' coordinate arithmetic), not photographs;
# vertices farther than this outside the image are refused for the same reason.
MAX_SIDE_PX = 1_000_000
# Relative area change below which a repair is not worth a warning (float noise of GEOS operations).
_AREA_EPS = 1e-9


@dataclass(frozen=True)
class RepairResult:
    """A valid outline, and one human-readable sentence for every change the repair made."""

    polygons: Polygons
    warnings: tuple[str, ...] = ()


def repair_polygons(polys: Polygons) -> RepairResult:
    """Validate and repair an edited outline; return it with a warning for every change.

    - fewer than 3 distinct vertices in a ring, or a non-finite coordinate: `GeometryError` naming it;
    - a self-intersecting part is repaired with GEOS `make_valid` (a figure-8 becomes two pieces);
      the warning names the part, the problem and where;
    - vertices outside the image: the outline is CLIPPED to the image rectangle, and the area cut off
      is reported; a part entirely outside the image raises `GeometryError` (we never drop a part);
    - overlapping or touching-along-an-edge parts are merged, reported;
    - an empty result raises `GeometryError`.
    """
    if not (0 < polys.width <= MAX_SIDE_PX and 0 < polys.height <= MAX_SIDE_PX):
        raise GeometryError(
            f"the image size must be positive and at most {MAX_SIDE_PX} px a side, "
            f"got {polys.width!s:.20}x{polys.height!s:.20}"
        )
    if not polys.parts:
        raise GeometryError("the outline is empty: draw at least one polygon")
    warnings: list[str] = []
    frame = shapely.box(0, 0, polys.width, polys.height)
    pieces = []
    try:
        for i, part in enumerate(polys.parts):
            pieces.append(_repair_part(part, i + 1, frame, polys.width, polys.height, warnings))
        merged = shapely.union_all(pieces)
    except GEOSException as e:  # a topology GEOS cannot settle: the user redraws
        raise GeometryError(f"the outline cannot be repaired ({e}): redraw it") from None
    n_in = sum(len(polygonal_parts(p)) for p in pieces)
    n_out = len(polygonal_parts(merged))
    if n_out < n_in:
        warnings.append(f"{n_in - n_out + 1} overlapping parts were merged into one; now {n_out} part(s)")
    result = from_shapely(merged, polys.width, polys.height)
    if not result.parts:
        raise GeometryError("the outline has no area left after repair: redraw it")
    return RepairResult(result, tuple(warnings))


def repair_polygon(part: Polygon, width: int, height: int) -> RepairResult:
    """`repair_polygons` for a single part."""
    return repair_polygons(Polygons((part,), width, height))


def _repair_part(part: Polygon, n: int, frame: ShapelyPolygon, width: int, height: int, warnings: list[str]) -> Any:
    for what, ring in (
        ("exterior", part.exterior),
        *((f"hole {j + 1}", h) for j, h in enumerate(part.holes)),
    ):
        arr = np.asarray(ring, dtype=np.float64).reshape(-1, 2)
        if not np.isfinite(arr).all():
            raise GeometryError(f"part {n} {what}: a vertex is not a finite number")
        far = (arr < -MAX_SIDE_PX) | (arr[:, :1] > width + MAX_SIDE_PX) | (arr[:, 1:] > height + MAX_SIDE_PX)
        if far.any():
            x, y = arr[int(np.argmax(far.any(axis=1)))]
            raise GeometryError(
                f"part {n} {what}: vertex ({x:.4g}, {y:.4g}) is more than {MAX_SIDE_PX} px outside the "
                f"{width}x{height} image: move it or redraw the part"
            )
        distinct = len({(float(x), float(y)) for x, y in arr})
        if distinct < 3:
            raise GeometryError(
                f"part {n} {what} has {distinct} distinct vertices; a polygon needs at least 3: "
                "add points or delete the part"
            )
    geom = part.to_shapely()
    if not geom.is_valid:
        reason = explain_validity(geom)
        before = len(polygonal_parts(geom))
        fixed = shapely.union_all(polygonal_parts(shapely.make_valid(geom)))
        after = len(polygonal_parts(fixed))
        pieces = f"; it is now {after} pieces" if after != before else ""
        warnings.append(f"part {n}: the outline was invalid ({reason}) and was repaired{pieces}")
        geom = fixed
    if geom.is_empty or geom.area <= 0:
        raise GeometryError(f"part {n} encloses no area: redraw it")
    if not frame.contains(geom):
        clipped = shapely.intersection(geom, frame)
        clipped = shapely.union_all(polygonal_parts(clipped))
        if clipped.is_empty or clipped.area <= 0:
            raise GeometryError(f"part {n} lies entirely outside the {width}x{height} image: move or delete it")
        lost = geom.area - clipped.area
        if lost > _AREA_EPS * max(geom.area, 1.0):
            warnings.append(f"part {n}: {lost:.1f} px² outside the image was cut off at the image border")
        geom = clipped
    return geom
